"""Language codes, the identifier's decisions, language inference, and the promise on Flores:
the filter keeps ≥ 99% of the true sentences of each of the 36 training languages and English."""
from __future__ import annotations

import numpy as np
import pytest

from bitextmine.errors import InputError
from bitextmine.filters import FilterOptions, FilterReport, filter_pairs, language_table, parse_language
from bitextmine.filters.langs import LABELS
from bitextmine.filters.lid import DEFAULT_THRESHOLD, shared_identifier
from bitextmine.filters.rules import FLORES_FILES, LENGTH_FACTORS
from tests.conftest import need_shared


@pytest.mark.parametrize("code, group", [
    ("deu", "deu"), ("de", "deu"), ("deu_Latn", "deu"), ("DEU", "deu"), ("zho_Hans", "zho"), ("cmn", "zho"), ("yue", "zho"),
    ("zh", "zho"), ("arb_Arab", "ara"), ("ara", "ara"), ("ind_Latn", "msa"), ("ms", "msa"), ("swh_Latn", "swa"),
    ("pes_Arab", "fas"), ("fil", "tgl"), ("jav_Latn", "jav"), ("hrv", "hbs"), ("nb", "nor"), ("est_Latn", "est"),
])
def test_codes_map_to_the_identifiers_groups(code, group):
    assert parse_language(code).group == group


@pytest.mark.parametrize("code", ["xyz", "", "deu_latn_x", "sun", "zxx", "english"])
def test_unknown_codes_are_one_line_errors_saying_where_to_look(code):
    with pytest.raises(InputError) as e:
        parse_language(code, "src_lang")
    msg = str(e.value)
    assert "\n" not in msg and "--list-languages" in msg and "ISO 639-3" in msg and e.value.param == "src_lang"


def test_the_table_covers_the_model():
    lid = shared_identifier()
    model_labels = set(lid._load().nb_classes)
    assert model_labels == set(LABELS)
    assert {g for g, *_ in language_table()} == set(lid.groups) - {"zxx"}


def test_decisions_on_hand_made_sentences():
    lid = shared_identifier()
    assert lid.accepts("Der Hund bellt jeden Morgen laut im Garten.", "deu")[0]
    ok, v = lid.accepts("The dog barks loudly in the garden every morning.", "deu")
    assert not ok and v.top == "eng" and v.prob < DEFAULT_THRESHOLD
    assert lid.accepts("狗每天早上在花园里大声叫。", "zho")[0]
    assert not lid.accepts("犬は毎朝庭で大きな声で吠えます。", "zho")[0]
    assert lid.accepts("Anjing itu menggonggong setiap pagi di kebun.", "msa")[0]


def test_languages_are_inferred_from_the_majority_of_the_first_lines():
    de = ["Der Hund bellt laut.", "Die Katze schläft auf dem Sofa.", "Wir fahren morgen nach Berlin.", "Das Wetter ist heute schön."]
    en = ["The dog barks loudly.", "The cat sleeps on the sofa.", "We are going to Berlin tomorrow.", "The weather is nice today."]
    rows = [(1.0, a, b) for a, b in zip(de, en)] + [(1.0, "Le chat dort sur le canapé.", "The cat sleeps on the sofa!")]
    rep = FilterReport()
    out = list(filter_pairs(rows, FilterOptions(infer_lines=4), report=rep))
    assert (rep.src_lang.group, rep.tgt_lang.group) == ("deu", "eng") and rep.src_lang.inferred and rep.src_lang.share == 1.0
    assert [d.reason for _, d in out][-1] == "src_lid"  # the fifth row was not in the sample, and is French
    with pytest.raises(InputError) as e:
        list(filter_pairs([(1.0, "12345", "678")], FilterOptions()))
    assert e.value.param == "src_lang"


def _flores(code: str) -> list[str]:
    path = need_shared("flores", f"{code}.txt")
    return path.read_text(encoding="utf-8").splitlines()


@pytest.mark.shared
def test_flores_keep_rate_is_at_least_99_percent_for_every_language():
    """Each Flores sentence judged as the language of its file, with the default rule."""
    lid = shared_identifier()
    rates = {}
    for group, code in FLORES_FILES.items():
        lines = _flores(code)
        rates[code] = np.mean([lid.accepts(s, group)[0] for s in lines])
    assert len(rates) == 37
    low = {c: round(r, 4) for c, r in rates.items() if r < 0.99}
    assert not low, low


@pytest.mark.shared
def test_flores_length_factors_are_the_measured_ones():
    eng = sum(len(s) for s in _flores("eng_Latn"))
    for group, code in FLORES_FILES.items():
        assert LENGTH_FACTORS[group] == pytest.approx(eng / sum(len(s) for s in _flores(code)), abs=6e-4), code
