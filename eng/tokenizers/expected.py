#!/usr/bin/env python3
"""Expected ids of the tokenizer tests, from Hugging Face `tokenizers` (the reference implementation).

usage: expected.py STRINGS.json NAME=TOKENIZER.json [NAME=TOKENIZER.json ...] > expected.json

For every string and tokenizer: the ids without and with special tokens (add_special_tokens False / True: the
tokenizer's post-processor decides what "with" adds), and the decoded text of the ids (skip_special_tokens True).
Run once where `tokenizers` is installed; the output is committed as tests/data/tokenizers/expected.json."""
import hashlib, json, sys

import tokenizers
from tokenizers import Tokenizer


def main(argv):
    strings = json.load(open(argv[1], encoding="utf-8"))
    out = {"tokenizers_version": tokenizers.__version__, "strings": len(strings), "tokenizers": {}}
    for arg in argv[2:]:
        name, path = arg.split("=", 1)
        raw = open(path, "rb").read()
        tok = Tokenizer.from_str(raw.decode("utf-8"))
        cases = []
        for s in strings:
            plain = tok.encode(s, add_special_tokens=False).ids
            special = tok.encode(s, add_special_tokens=True).ids
            cases.append({"ids": plain, "ids_special": special, "decoded": tok.decode(plain, skip_special_tokens=True)})
        out["tokenizers"][name] = {"sha256": hashlib.sha256(raw).hexdigest(), "vocab_size": tok.get_vocab_size(with_added_tokens=True), "cases": cases}
    json.dump(out, sys.stdout, ensure_ascii=True, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv)
