"""train/prepare_gettext.py on hand-built .mo catalogs and fake .deb archives (no network, no apt)."""
from __future__ import annotations

import collections
import gettext
import importlib.util
import io
import lzma
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "train" / "prepare_gettext.py"


def load():
    spec = importlib.util.spec_from_file_location("prepare_gettext", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["prepare_gettext"] = mod  # multiprocessing (fork) and pickling find it by name
    spec.loader.exec_module(mod)
    return mod


pg = load()


# ------------------------------------------------------------------------------------ fixtures


def make_mo(entries: dict[str, str], *, charset: str = "UTF-8", nplurals: int = 2, big_endian: bool = False,
            header: str | None = None) -> bytes:
    """A GNU .mo file written by hand (the format msgfmt writes, without a hash table).

    Keys: ``msgid``, ``ctx\\x04msgid`` (context) or ``msgid\\x00plural``; values: msgstr or
    ``form0\\x00form1...``.
    """
    if header is None:
        header = (f"Content-Type: text/plain; charset={charset}\nContent-Transfer-Encoding: 8bit\n"
                  f"Plural-Forms: nplurals={nplurals}; plural=(n != 1);\n")
    items = {b"": header.encode("ascii")}
    for k, v in entries.items():
        items[k.encode(charset)] = v.encode(charset)
    keys = sorted(items)
    n = len(keys)
    ids = strs = b""
    k_tab, v_tab = [], []
    k_start = 28 + 16 * n
    v_start = k_start + sum(len(k) + 1 for k in keys)
    for k in keys:
        k_tab += [len(k), k_start + len(ids)]
        v_tab += [len(items[k]), v_start + len(strs)]
        ids += k + b"\0"
        strs += items[k] + b"\0"
    e = ">" if big_endian else "<"
    head = struct.pack(e + "7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    return head + struct.pack(f"{e}{2 * n}I", *k_tab) + struct.pack(f"{e}{2 * n}I", *v_tab) + ids + strs


def _ar_member(name: str, data: bytes) -> bytes:
    hdr = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode("ascii")
    return hdr + data + (b"\n" if len(data) % 2 else b"")


def make_deb(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A minimal .deb: ar archive of debian-binary, control.tar.xz and data.tar.xz."""
    def tar_xz(members: dict[str, bytes], symlinks: dict[str, str]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for name, data in members.items():
                ti = tarfile.TarInfo("./" + name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            for name, target in symlinks.items():
                ti = tarfile.TarInfo("./" + name)
                ti.type = tarfile.SYMTYPE
                ti.linkname = target
                tf.addfile(ti)
        return lzma.compress(buf.getvalue())

    control = tar_xz({"control": b"Package: x\nVersion: 1.0\nArchitecture: all\n"}, {})
    data = tar_xz(files, links or {})
    path.write_bytes(b"!<arch>\n" + _ar_member("debian-binary", b"2.0\n") + _ar_member("control.tar.xz", control)
                     + _ar_member("data.tar.xz", data))
    return path


DE = {
    "Open the selected file in a new window": "Die ausgewählte Datei in einem neuen Fenster öffnen",
    "menu\x04Save all changes before closing the document": "Alle Änderungen vor dem Schließen des Dokuments speichern",
    "One file was deleted from the folder\x00Some files were deleted from the folder":
        "Eine Datei wurde aus dem Ordner gelöscht\x00Einige Dateien wurden aus dem Ordner gelöscht",
    "Could not open %s because it does not exist": "Konnte %s nicht öffnen, da es nicht existiert",
    "Quit": "Beenden",
}
COPYRIGHT = (b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
             b"Files: *\nCopyright: 2020 Someone\nLicense: GPL-2+\n\nFiles: po/*\nCopyright: x\nLicense: LGPL-2.1+\n")


# ------------------------------------------------------------------------------------ codes, paths


@pytest.mark.parametrize(("loc", "code"), [
    ("de", "de"), ("pt_BR", "pt"), ("pt", "pt"), ("de_CH.UTF-8", "de"), ("zh_CN", "zh"), ("zh", "zh"),
    ("zh_TW", "zh_Hant"), ("zh_HK", "zh_Hant"), ("zh_Hant", "zh_Hant"), ("zh_Hans", "zh"), ("sr", "sr"),
    ("sr@latin", "sr_Latn"), ("sr_RS@latin", "sr_Latn"), ("sr@ijekavian", "sr"), ("sr@ijekavianlatin", "sr_Latn"),
    ("sr_Latn", "sr_Latn"), ("uz@cyrillic", "uz_Cyrl"), ("uz", "uz"), ("ca@valencia", "ca"), ("be@latin", "be_Latn"),
    ("pa_PK", "pa_Arab"), ("pa", "pa"), ("iw", "he"), ("in", "id"), ("no", "nb"), ("nb_NO", "nb"), ("fil", "tl"),
    ("ast", "ast"), ("es_419", "es"), ("en_GB", None), ("en@quot", None), ("C", None), ("x-test", None),
    ("templates", None), ("", None),
])
def test_normalise_lang(loc, code):
    assert pg.normalise_lang(loc) == code


@pytest.mark.parametrize(("path", "loc"), [
    ("usr/share/locale/pt_BR/LC_MESSAGES/gtk30.mo", "pt_BR"),
    ("./usr/lib/libreoffice/program/resource/sr-Latn/LC_MESSAGES/sw.mo", "sr-Latn"),
    ("usr/share/locale/sr@latin/LC_MESSAGES/app.mo", "sr@latin"),
    ("usr/share/wordpress/wp-content/languages/admin-network-de_DE.mo", "de_DE"),
    ("usr/share/wordpress/wp-content/languages/ja.mo", "ja"),
    ("usr/share/kvirc/5.0/locale/kvirc_pt_BR.mo", "pt_BR"),
    ("de/messages.mo", "de"),  # inside calibre's locales.zip
    ("usr/share/app/strings.mo", None),
])
def test_lang_of_path(path, loc):
    assert pg.lang_of_path(path) == loc


# ------------------------------------------------------------------------------------ .mo parsing


def test_parse_mo_contexts_plurals_and_stdlib_agreement():
    mo = make_mo(DE)
    cat = pg.parse_mo(mo)
    assert cat["charset"].lower() == "utf-8" and cat["nplurals"] == 2 and cat["bad_encoding"] == 0
    got = {msgid: (plural, strs) for msgid, plural, strs in cat["entries"]}
    assert got["Save all changes before closing the document"][1] == ["Alle Änderungen vor dem Schließen des Dokuments speichern"]
    assert got["One file was deleted from the folder"][0] == "Some files were deleted from the folder"
    pairs = dict(pg.catalog_pairs(cat))
    assert pairs["One file was deleted from the folder"] == "Eine Datei wurde aus dem Ordner gelöscht"
    assert pairs["Some files were deleted from the folder"] == "Einige Dateien wurden aus dem Ordner gelöscht"
    assert "" not in pairs  # the header is not a pair
    # the hand-written file is a valid catalog for the standard library too
    t = gettext.GNUTranslations(io.BytesIO(mo))
    assert t.gettext("Open the selected file in a new window") == pairs["Open the selected file in a new window"]
    assert t.pgettext("menu", "Save all changes before closing the document").startswith("Alle")
    assert t.ngettext("One file was deleted from the folder", "Some files were deleted from the folder", 5).startswith("Einige")


def test_parse_mo_plural_forms_beyond_two_pair_only_the_singular():
    ru = {"One file was deleted from the folder\x00Some files were deleted from the folder":
          "Один файл был удалён из папки\x00Несколько файлов были удалены из папки\x00Много файлов было удалено из папки"}
    pairs = pg.catalog_pairs(pg.parse_mo(make_mo(ru, nplurals=3)))
    assert pairs == [("One file was deleted from the folder", "Один файл был удалён из папки")]


def test_parse_mo_charset_big_endian_and_bad_bytes():
    fr = {"Remove the selected item from the list": "Supprimer l'élément sélectionné de la liste"}
    cat = pg.parse_mo(make_mo(fr, charset="ISO-8859-1", big_endian=True))
    assert cat["charset"] == "ISO-8859-1"
    assert pg.catalog_pairs(cat) == [("Remove the selected item from the list", "Supprimer l'élément sélectionné de la liste")]
    # a catalog that says UTF-8 but holds Latin-1 bytes: that entry is counted, not decoded into garbage
    bad = make_mo(fr, charset="ISO-8859-1").replace(b"charset=ISO-8859-1", b"charset=UTF-8\x00\x00\x00\x00\x00\x00\x00\x00"[:18])
    cat = pg.parse_mo(bad)
    assert cat["bad_encoding"] == 1 and cat["entries"] == []
    # an unfilled template header means UTF-8
    assert pg.parse_mo(make_mo(fr, header="Content-Type: text/plain; charset=CHARSET\n"))["charset"] == "utf-8"
    with pytest.raises(pg.MoError):
        pg.parse_mo(b"not a catalog at all, just some bytes")
    with pytest.raises(pg.MoError):
        pg.parse_mo(make_mo(fr)[:40])


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="msgfmt (gettext) not installed")
def test_parse_mo_of_msgfmt_output(tmp_path):
    po = tmp_path / "x.po"
    po.write_text('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n'
                  '"Plural-Forms: nplurals=2; plural=(n != 1);\\n"\n\n'
                  'msgctxt "button"\nmsgid "Delete the selected messages from the server"\n'
                  'msgstr "Ausgewählte Nachrichten vom Server löschen"\n\n'
                  'msgid "One message was deleted from the mailbox"\nmsgid_plural "Several messages were deleted from the mailbox"\n'
                  'msgstr[0] "Eine Nachricht wurde aus dem Postfach gelöscht"\n'
                  'msgstr[1] "Mehrere Nachrichten wurden aus dem Postfach gelöscht"\n', encoding="utf-8")
    subprocess.run(["msgfmt", "-o", str(tmp_path / "x.mo"), str(po)], check=True)
    pairs = dict(pg.catalog_pairs(pg.parse_mo((tmp_path / "x.mo").read_bytes())))
    assert pairs == {"Delete the selected messages from the server": "Ausgewählte Nachrichten vom Server löschen",
                     "One message was deleted from the mailbox": "Eine Nachricht wurde aus dem Postfach gelöscht",
                     "Several messages were deleted from the mailbox": "Mehrere Nachrichten wurden aus dem Postfach gelöscht"}


# ------------------------------------------------------------------------------------ .deb reading


def test_read_deb_and_license(tmp_path):
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("fr/messages.mo", make_mo({"Remove the selected item from the list": "Supprimer l'élément sélectionné de la liste"}))
    deb = make_deb(tmp_path / "app_1.0_all.deb", {
        "usr/share/locale/de/LC_MESSAGES/app.mo": make_mo(DE),
        "usr/share/app/localization/locales.zip": zbuf.getvalue(),
        "usr/share/doc/app/examples/locale/it/LC_MESSAGES/demo.mo": make_mo(DE),  # example data: skipped
        "usr/share/doc/app/copyright": COPYRIGHT,
        "usr/bin/app": b"\x7fELF",
    })
    if shutil.which("dpkg-deb"):  # the fixture is a real .deb as far as dpkg is concerned
        listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
        assert "./usr/share/locale/de/LC_MESSAGES/app.mo" in listing
    members = pg.read_deb(deb, lambda n: n.endswith(".mo"))
    assert set(members) == {"usr/share/locale/de/LC_MESSAGES/app.mo", "usr/share/doc/app/examples/locale/it/LC_MESSAGES/demo.mo"}
    res = pg.process_deb(deb, "app")
    assert res["license"] == "GPL-2+ (also: LGPL-2.1+)"
    assert res["catalogs"] == 2 and set(res["pairs"]) == {"de", "fr"}
    assert res["raw"] == {"de": 6, "fr": 1}  # 5 entries + one extra plural form; the header is no entry
    assert sorted(en for _, en in res["pairs"]["de"]) == sorted([
        "Open the selected file in a new window", "Save all changes before closing the document",
        "One file was deleted from the folder", "Some files were deleted from the folder"])
    assert res["drops"]["de"] == {"placeholder": 1, "en_words_not_6_60": 1}
    # doc folder that is a link to another package's
    deb2 = make_deb(tmp_path / "app-data_1.0_all.deb", {"usr/share/locale/de/LC_MESSAGES/x.mo": make_mo(DE)},
                    links={"usr/share/doc/app-data": "app"})
    assert pg.process_deb(deb2, "app-data")["license"] == "(doc dir links to app)"


def test_license_summary():
    assert pg.license_summary(COPYRIGHT.decode()) == "GPL-2+ (also: LGPL-2.1+)"
    assert pg.license_summary("This package is under the GNU Lesser General Public License and the GPL.") == \
        "non-DEP-5; mentions LGPL, GPL"
    assert pg.license_summary(None) == "?"
    assert pg.license_summary("Format: x\n\nFiles: po/*\nLicense: MIT\n") == "? (also: MIT)"


# ------------------------------------------------------------------------------------ cleaning

GOOD_EN = "Open the selected file in a new window"
GOOD_DE = "Die ausgewählte Datei in einem neuen Fenster öffnen"


@pytest.mark.parametrize(("en", "xx", "lang", "reason"), [
    (GOOD_EN, GOOD_DE, "de", None),
    ("", GOOD_DE, "de", "empty"),
    (GOOD_EN, "", "de", "empty"),
    ("Open file", "Datei öffnen", "de", "en_words_not_6_60"),
    (" ".join(["word"] * 61), GOOD_DE, "de", "en_words_not_6_60"),
    (GOOD_EN, "Die ausgewÃ¤hlte Datei in einem neuen Fenster", "de", "bad_encoding"),
    (GOOD_EN, "Die ausgew\ufffdhlte Datei in einem neuen Fenster", "de", "bad_encoding"),
    ("Open the selected file\nin a new window", GOOD_DE, "de", "newline"),
    (GOOD_EN, "Die ausgewählte Datei\tin einem neuen Fenster öffnen", "de", "control_char"),
    (GOOD_EN, "Die ausgewählte Datei\x07 in einem neuen Fenster öffnen", "de", "control_char"),
    ("Could not open %s because it does not exist", "Konnte %s nicht öffnen, da es nicht existiert", "de", "placeholder"),
    ("Could not open {0} because it does not exist", "Konnte {0} nicht öffnen, da es nicht existiert", "de", "placeholder"),
    ("Could not open $1 because it does not exist", "Konnte $1 nicht öffnen, da es nicht existiert", "de", "placeholder"),
    ("Could not open %1 because it does not exist", "Konnte %1 nicht öffnen, da es nicht existiert", "de", "placeholder"),
    ("$(ARG1) cannot be copied into itself at all", "$(ARG1) kann nicht in sich selbst kopiert werden", "de", "placeholder"),
    ("$(FILE.FOLDER) - folder containing the input image", "$(FILE.FOLDER) - Ordner mit dem Eingabebild", "de", "placeholder"),
    ("You want to add months to a date? Use EDATE(date;months) then", "Sie wollen Monate addieren? Nutzen Sie EDATE(Datum;Monate)", "de", "code_like"),
    ("Please install @PACKAGE@ before you continue here", "Bitte installieren Sie @PACKAGE@ bevor Sie fortfahren", "de", "placeholder"),
    ("Open the <b>selected</b> file in a new window", "Die <b>ausgewählte</b> Datei in einem neuen Fenster öffnen", "de", "markup"),
    ("Open the selected file &amp; show it in a window", "Datei &amp; in einem neuen Fenster öffnen", "de", "markup"),
    ("See https://example.org for more information about this", "Siehe https://example.org für weitere Informationen dazu", "de", "url"),
    ("Send your bug reports to bugs@example.org and wait patiently", "Senden Sie Fehlerberichte an bugs@example.org und warten Sie", "de", "url"),
    ("Call gtk_widget_show() before you use the widget", "Rufen Sie gtk_widget_show() auf, bevor Sie es benutzen", "de", "code_like"),
    ("Set the value of the max_size option in the configuration", "Setzen Sie den Wert der Option max_size in der Konfiguration", "de", "code_like"),
    ("The configuration is read from /etc/app/app.conf at startup", "Die Konfiguration wird beim Start aus /etc/app/app.conf gelesen", "de", "code_like"),
    ("Use `app --reset` to restore the default settings again", "Verwenden Sie `app --reset` um die Standardeinstellungen wiederherzustellen", "de", "code_like"),
    (GOOD_EN, "Open the selected file in the new window now", "ru", "untranslated_ascii"),
    (GOOD_EN, "open the selected file in a new   window", "de", "untranslated_equal"),
    (GOOD_EN, "Open the selected file in a neuen window", "de", "untranslated_overlap"),
    ("Öffnen Sie die ausgewählte Datei in einem neuen Fenster", "Ouvrir le fichier sélectionné dans une nouvelle fenêtre", "fr", "en_not_english"),
    ("Ouvrir le fichier sélectionné dans une nouvelle fenêtre", GOOD_DE, "de", "en_not_english"),
    ("Открыть выбранный файл в новом окне сейчас же", GOOD_DE, "de", "en_not_english"),
    (GOOD_EN, "Datei", "de", "length_ratio"),
    (GOOD_EN, GOOD_DE * 5, "de", "length_ratio"),
    (GOOD_EN, "在新窗口中打开所选文件", "zh", None),  # short CJK is fine
    (GOOD_EN, "Открыть выбранный файл в новом окне", "ru", None),
    ("The ratio 1/2 is used & nothing else changes here", "Das Verhältnis 1/2 wird verwendet & sonst ändert sich nichts", "de", None),
])
def test_clean_reason(en, xx, lang, reason):
    assert pg.clean_reason(en, xx, lang) == reason


def test_clean_pairs_strips_accelerators_and_counts():
    drops = collections.Counter()
    kept = pg.clean_pairs([
        ("_Open the selected file in a new window", "Die ausgewählte Datei in einem neuen Fenster ö_ffnen"),
        ("&Save all changes before closing the document", "Alle Änderungen vor dem Schließen &speichern"),
        ("_Open the selected file in a new window", "在新窗口中打开所选文件(_O)"),
        ("Open file", "Datei öffnen"),
        ("Could not open %s because it does not exist", "Konnte %s nicht öffnen"),
        ("  Open the selected   file in a new window ", "  Die ausgewählte Datei in einem neuen Fenster öffnen  "),
    ], "de", drops)
    assert kept == [
        ("Die ausgewählte Datei in einem neuen Fenster öffnen", "Open the selected file in a new window"),
        ("Alle Änderungen vor dem Schließen speichern", "Save all changes before closing the document"),
        ("在新窗口中打开所选文件", "Open the selected file in a new window"),
        ("Die ausgewählte Datei in einem neuen Fenster öffnen", "Open the selected file in a new window"),
    ]
    assert drops == {"en_words_not_6_60": 1, "placeholder": 1}
    assert set(drops) <= set(pg.REASONS)


# ------------------------------------------------------------------------------------ corpus


def _res(pkg, pairs, raw=None, lic="GPL-2+"):
    return {"package": pkg, "license": lic, "raw": raw or {k: len(v) for k, v in pairs.items()},
            "drops": {k: {"placeholder": 1} for k in pairs}, "pairs": pairs, "catalogs": 1, "errors": []}


def test_build_corpus_dedup_cap_and_determinism():
    a = _res("a-pkg", {"de": [["Eins", "One thing"], ["Zwei", "Two things"]], "fr": [["Un", "One thing"]]})
    b = _res("b-pkg", {"de": [["Noch eins", "one  THING"], ["Drei", "Three things"], ["Vier", "Four things"]]})
    c = pg.build_corpus([a, b], cap=3, seed=0)
    assert c["available"] == {"de": 4, "fr": 1}
    assert c["drops"]["dup_english"] == 1  # case and spacing folded; the first package wins
    de = c["rows"]["de"]
    assert len(de) == 3 and len({en for _, en, _ in de}) == 3
    assert ("Noch eins", "one  THING", "b-pkg") not in de
    assert c["rows"]["fr"] == [("Un", "One thing", "a-pkg")]  # dedup is per language
    assert c["raw"] == {"de": 5, "fr": 1} and c["drops"]["placeholder"] == 3
    # same seed, same sample; another seed, another one (4 choose 3 orders: compare the full shuffle)
    assert pg.build_corpus([a, b], cap=3, seed=0)["rows"] == c["rows"]
    full = [pg.build_corpus([a, b], cap=10, seed=s)["rows"]["de"] for s in range(6)]
    assert len({tuple(r) for r in full}) > 1
    assert pg.build_corpus([a, b], cap=3, seed=0, langs={"fr"})["rows"].keys() == {"fr"}


def test_write_outputs_layout(tmp_path):
    a = _res("a-pkg", {"de": [["Eins", "One thing"], ["Zwei", "Two things"], ["Drei", "Three things"]],
                       "fr": [["Un", "One thing"]]}, lic="MIT | X")
    c = pg.build_corpus([a], cap=2, seed=0)
    written = pg.write_outputs(tmp_path, c, min_pairs=2, cap=2, seed=0, command="python x")
    assert written == ["de"]
    lines = (tmp_path / "de-en.tsv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and all(len(ln.split("\t")) == 2 for ln in lines)
    assert not (tmp_path / "fr-en.tsv").exists()
    stats = (tmp_path / "STATS.md").read_text(encoding="utf-8")
    assert "| de | 2 | 3 | 3 | a-pkg (2) |" in stats
    assert "| **total** | **2** | **3** | | |" in stats
    assert "Below 2 pairs (not written): fr (1)" in stats
    assert "| placeholder | 2 |" in stats
    assert "| a-pkg | 2 | MIT / X |" in stats
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


# ------------------------------------------------------------------------------------ main


def _fake_cache(tmp_path):
    debs = tmp_path / "cache" / "debs"
    debs.mkdir(parents=True)
    de2 = {"Delete the selected messages from the server": "Ausgewählte Nachrichten vom Server löschen",
           "Open the selected file in a new window": "Ausgewählte Datei in neuem Fenster öffnen"}  # a duplicate English
    pt = {"Open the selected file in a new window": "Abrir o arquivo selecionado em uma nova janela",
          "Delete the selected messages from the server": "Excluir as mensagens selecionadas do servidor"}
    make_deb(debs / "aaa-l10n_1.0_all.deb", {"usr/share/locale/de/LC_MESSAGES/a.mo": make_mo(DE),
                                              "usr/share/locale/pt_BR/LC_MESSAGES/a.mo": make_mo(pt),
                                              "usr/share/doc/aaa-l10n/copyright": COPYRIGHT})
    make_deb(debs / "bbb-data_2.0_all.deb", {"usr/share/locale/de/LC_MESSAGES/b.mo": make_mo(de2),
                                              "usr/share/locale/en_GB/LC_MESSAGES/b.mo": make_mo(de2)})
    return tmp_path / "cache"


def test_main_offline_end_to_end(tmp_path, capsys):
    cache = _fake_cache(tmp_path)
    out = tmp_path / "out"
    args = ["--out", str(out), "--cache", str(cache), "--offline", "--min-pairs", "2", "--jobs", "1"]
    assert pg.main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["STATS.md", "de-en.tsv", "pt-en.tsv"]
    de = [tuple(ln.split("\t")) for ln in (out / "de-en.tsv").read_text(encoding="utf-8").splitlines()]
    assert len(de) == 5 and len({en for _, en in de}) == 5
    assert ("Die ausgewählte Datei in einem neuen Fenster öffnen", "Open the selected file in a new window") in de  # aaa first
    stats = (out / "STATS.md").read_text(encoding="utf-8")
    assert "| dup_english | 1 |" in stats and "| aaa-l10n | 6 | GPL-2+ (also: LGPL-2.1+) |" in stats
    assert "| bbb-data | 1 | ? |" in stats
    def snapshot():  # the files, without STATS.md's line that quotes the command
        return {p.name: [ln for ln in p.read_text(encoding="utf-8").splitlines() if not ln.startswith("Command:")]
                for p in out.iterdir()}

    first = snapshot()
    assert any((cache / "parsed").iterdir())
    # a rerun (parsed results cached, two processes) writes the same files; --cap and --langs apply
    assert pg.main(args[:-2] + ["--jobs", "2"]) == 0
    assert snapshot() == first
    out2 = tmp_path / "out2"
    assert pg.main(["--out", str(out2), "--cache", str(cache), "--offline", "--min-pairs", "2", "--cap", "3",
                    "--langs", "de"]) == 0
    assert sorted(p.name for p in out2.iterdir()) == ["STATS.md", "de-en.tsv"]
    assert len((out2 / "de-en.tsv").read_text(encoding="utf-8").splitlines()) == 3
    capsys.readouterr()
    assert pg.main(args + ["--dry-run"]) == 0
    assert "2 packages (cache): 2 cached, 0 to download" in capsys.readouterr().out


def test_missing_apt_is_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pg.shutil, "which", lambda name: None)
    rc = pg.main(["--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c"), "--packages", "vlc-l10n"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and err.startswith("error: apt-get not found")
    rc = pg.main(["--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c")])
    assert rc == 2


def test_packages_from_contents(tmp_path):
    import gzip

    idx = tmp_path / "Contents-all.gz"
    idx.write_bytes(gzip.compress(
        b"usr/share/locale/de/LC_MESSAGES/vlc.mo                  localization/vlc-l10n\n"
        b"usr/share/locale/pt_BR/LC_MESSAGES/gtk30.mo             libs/libgtk-3-common,libs/libgtk-4-common\n"
        b"usr/share/locale/en_GB/LC_MESSAGES/only-english.mo      misc/en-only\n"
        b"usr/share/doc/foo/examples/locale/de/LC_MESSAGES/x.mo  doc/foo-doc\n"
        b"usr/share/foo/README.mo.txt                             misc/not-a-catalog\n"))
    found = pg.packages_from_contents([idx])
    assert found == {"vlc-l10n": {"de"}, "libgtk-3-common": {"pt"}, "libgtk-4-common": {"pt"}}
