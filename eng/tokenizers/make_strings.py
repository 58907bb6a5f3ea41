#!/usr/bin/env python3
"""Writes tests/data/tokenizers/strings.json: the strings whose Hugging Face `tokenizers` ids the tokenizer tests
compare against (documents of data/corpus, Unicode, whitespace runs, digits, special-token text). Deterministic:
rerun it from the repository root and the file does not change. Then run expected.py (needs `tokenizers`)."""
import json, os, random

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
corpus = os.path.join(root, "data", "corpus")

def docs(name):
    with open(os.path.join(corpus, name), encoding="utf-8") as f:
        return f.read().rstrip("\n").split("\n\n")

rng = random.Random(12)
strings = []
# Documents of the corpus: 60 whole validation documents of at most 1,500 characters and 40 calibration excerpts.
valid = [d for d in docs("valid.txt") if 0 < len(d) <= 1500]
strings += rng.sample(valid, min(60, len(valid)))
calib = [d for d in docs("calib.txt") if len(d) > 0]
for d in rng.sample(calib, min(40, len(calib))):
    start = rng.randrange(0, max(1, len(d) - 400))
    strings.append(d[start:start + rng.randrange(20, 400)])

hand = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", " \n ", "\t\t x", "a  b", "a   b", "a    b",
    "a\tb", "a\n\nb", "a \n b", "trailing   ", "   leading", "  both  ", "x\u00a0y", "x\u3000y", "x\u2003y", "\u00a0",
    "a\u2028b", "a\u0085b", "a\x0bb\x0cc", " \t\n\r ", "end with newline\n", "\n start with newline",
    "The", "the", " the", "Hello, world!", "Hello world", "HELLO WORLD", "hello-world_foo.bar",
    "I'm", "you're", "we've", "they'll", "she'd", "it's", "IT'S", "YOU'LL", "I'M", "don't", "o'clock", "'s", "'S", "''",
    "rock 'n' roll", "ſ'ſ", "x'ſ",
    "0", "7", "12", "123", "1234", "12345", "1234567", "3.14159", "1,000,000", "2024-12-06", "10:30 a.m.", "+1 (555) 123-4567",
    "$1.99", "50%", "1e-10", "0x7FFF", "١٢٣٤٥", "０１２３", "²³", "½ ¾", "Ⅻ", "𝟙𝟚𝟛",
    "naïve café", "résumé", "Ångström", "Straße", "ÆØÅ æøå", "İstanbul", "ﬁne", "e\u0301", "n\u0303o", "Å vs A\u030a",
    "日本語のテキスト", "中文文本测试", "한국어 텍스트", "Привет, мир!", "Γειά σου Κόσμε", "שלום עולם", "مرحبا بالعالم",
    "नमस्ते दुनिया", "สวัสดีชาวโลก", "ქართული", "Ελληνικά και English mixed",
    "🦙", "🦙🦙🦙", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇩🇪", "I ❤️ NY", "☃", "✓ done", "→ ← ↑ ↓", "∑ ∫ ∂ √ ∞", "ℚ ℝ ℂ",
    "𝕏 𝔸𝔹ℂ", "𠀀𠀁", "𐍈𐍉", "a𝕏b", " 𝕏", "𝟘x", "\U0001F600 grin", "😀😃😄",
    "\u200b", "a\u200bb", "a\u200db", "\ufeffbom", "soft\u00adhyphen", "\x01\x02\x7f", "tab\there", "nul\x00byte",
    "\ufffd", "\u2581", "\u2581\u2581x", "▁leading", "Ġ", "ĠĠĠ", "Ċ",
    "fffffff", "aaaaaaaaaaaaaaaaaaaa", "!!!!!!!!", "........", "--------", "========", "        indented",
    "<s>", "</s>", "<unk>", "<s> hello </s>", "a<s>b", "<s><s>", "<<s>>", "< s>", "<S>", "</s>\n<s>",
    "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "<|begin_of_text|><|begin_of_text|>", "x<|eot_id|>y", "<|begin_of", "<|reserved_special_token_0|>", "<|reserved_special_token_250|>",
    "<|finetune_right_pad_id|>", "<|python_tag|>", "< |eot_id| >", "<|EOT_ID|>",
    "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; i++) { a[i] += b[i]; }", "if x == 1:\n\tpass",
    "{\"key\": [1, 2, 3], \"b\": null}", "<html><body class=\"x\">Hi</body></html>", "https://example.com/path?q=1&r=two#frag",
    "user@example.org", "C:\\Windows\\System32", "/usr/local/bin/qtip --help", "SELECT * FROM t WHERE id = 42;",
    "x = y**2 + 3*z - 1/2", "a+b=c", "α β γ δ ε", "f(x) = ∑ᵢ wᵢxᵢ", "E = mc²", "H₂O", "~/.cache/huggingface/hub",
    "Mr. Smith's dog's bone", "e.g., i.e., etc.", "\"quoted\" 'single' `back`", "«guillemets» „Anführungszeichen“", "… — –",
    "    ", "\n    \n", "line1\nline2\nline3", "para1\n\npara2", "word\n", " word", "word ", "  word  ",
]
strings += hand

# Combinations: pieces joined with random separators (whitespace runs, digits, special-token text).
pieces = ["the", "The", "Qtip", "llama", "3", "42", "2024", "café", "日本", "🦙", "<s>", "</s>", "<|eot_id|>",
          "<|begin_of_text|>", "it's", "x", "!", "...", "\u00a0", "𝕏", "ﬁ", "-", "_", "(", ")", "ab12cd"]
seps = ["", " ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "\u3000"]
for _ in range(120):
    k = rng.randrange(2, 8)
    s = "".join(rng.choice(pieces) + rng.choice(seps) for _ in range(k))
    strings.append(s)

seen, out = set(), []
for s in strings:
    if s not in seen:
        seen.add(s)
        out.append(s)
path = os.path.join(root, "tests", "data", "tokenizers", "strings.json")
with open(path, "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=True, indent=0)
    f.write("\n")
print(f"{len(out)} strings -> {path}")
