"""train/prepare_opus.py against a local file:// mirror laid out like OPUS (no network)."""
from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "train" / "prepare_opus.py"


def load():
    spec = importlib.util.spec_from_file_location("prepare_opus", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_prepare_opus_from_local_mirror(tmp_path, capsys):
    mod = load()
    mirror = tmp_path / "mirror" / "OPUS-Tanzil" / "v1" / "moses"
    mirror.mkdir(parents=True)
    de = ["Guten Morgen", "Hallo\tWelt", 'Sag "nein"', "same", "", "mail a@b.de", "Gute Nacht"]
    en = ["Good morning", "Hello world", "Say no", "same", "empty", "mail", "Good night"]
    with zipfile.ZipFile(mirror / "de-en.txt.zip", "w") as z:
        z.writestr("Tanzil.de-en.de", "\n".join(de) + "\n")
        z.writestr("Tanzil.de-en.en", "\n".join(en) + "\n")
    out = tmp_path / "out"
    args = ["--out", str(out), "--langs", "de,jv", "--corpora", "Tanzil", "--base-url", (tmp_path / "mirror").as_uri()]
    assert mod.main(args) == 0
    rows = [ln.split("\t") for ln in (out / "de-en.tsv").read_text().splitlines()]
    assert sorted(map(tuple, rows)) == sorted([("Guten Morgen", "Good morning"), ("Hallo Welt", "Hello world"),
                                                ("Sag nein", "Say no"), ("Gute Nacht", "Good night")])
    assert not (out / "jv-en.tsv").exists()  # Tanzil has no Javanese
    # a capped sample, and finished downloads / files are reused
    (out / "de-en.tsv").unlink()
    assert mod.main(args + ["--per-corpus", "2"]) == 0
    assert len((out / "de-en.tsv").read_text().splitlines()) == 2
    assert (out / "zips" / "Tanzil" / "de-en.txt.zip").is_file()
    assert mod.main(args + ["--dry-run"]) == 0
    assert "OPUS-Tanzil/v1/moses/de-en.txt.zip" in capsys.readouterr().out
