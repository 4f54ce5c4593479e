#!/usr/bin/env python3
"""Write the golden cross-check of the Rust port of the Korean task rules.

Imports the reference generator/grader `ko_synth.py` (stdlib only) from the path given on the
command line (default: ../shared/reference/ko_synth.py relative to the repository root) and writes
worker/tests/fixtures/ko_synth_golden.jsonl: one JSON line per deterministic input with the
reference's *function output*, e.g. {"fn":"num2sino","in":1234,"out":"천이백삼십사"}. "out" is null
where the reference raises. `worker/src/data/korean_tasks.rs` asserts every line in its unit tests.

Inputs are fixed formulas, never random, so rerunning this script reproduces the file byte for
byte. The only seeded part is the "prompt" lines: the reference's own make_example with
random.Random(seed), so the Rust prompts are compared with prompts the reference really produced.

    python3 worker/scripts/ko_synth_golden.py [path/to/ko_synth.py]
"""
import importlib.util
import json
import random
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "worker" / "tests" / "fixtures" / "ko_synth_golden.jsonl"
U64_MAX = 2**64 - 1
COUNTERS = ["개", "명", "마리", "살", "권", "병", "잔"]  # the counters make_example draws from


def load_reference(path):
    spec = importlib.util.spec_from_file_location("ko_synth", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def call(f, *args):
    """The reference's output, or None where it raises (the Rust port returns None there)."""
    try:
        return f(*args)
    except (ValueError, KeyError, IndexError):
        return None


def large_numbers():
    """~2,000 numbers in 10^4..=10^19 (and a few up to u64::MAX), spread by fixed formulas."""
    out = set()
    for k in range(1, 20):  # every power of ten and its neighbours: the 일-dropping and zero-group edges
        p = 10**k
        out.update({p - 1, p, p + 1, p + 10**(k // 2), 2 * p})
    out.update({10**19, 2**63 - 1, 2**63, U64_MAX, 10001, 100010000, 1000000010000, 10**16 + 10**4})
    # Numbers built from "interesting" 4-digit groups (0, 1, 10, 1000, ...), including zero groups
    # and a group equal to 1 in every position.
    groups = [0, 1, 2, 9, 10, 11, 19, 100, 101, 110, 999, 1000, 1001, 1010, 1100, 2000, 9999, 5050]
    mults = [1, 7, 13, 17, 23]
    for i in range(800):
        n = sum(groups[(i * mults[j] + 5 * j) % len(groups)] * 10000**j for j in range(5))
        out.add(n % 10**19)
    # Numbers spread over every digit count 5..=19 (a multiplicative hash of i, not random).
    for i in range(1900):
        d = 5 + i % 15
        lo = 10 ** (d - 1)
        out.add(lo + (i * 2654435761 * 40503 + i * i * 97) % (9 * lo))
    return sorted(n for n in out if 10**4 <= n <= U64_MAX)


def syllable_strings(ref):
    """500 strings of 1..6 syllables; the strides reach every L, V and T index."""
    out = []
    for i in range(500):
        length = 1 + i % 6
        out.append("".join(chr(ref.SBASE + (i * 7919 + j * 104729 + j * j * 31) % ref.SCOUNT) for j in range(length)))
    return out


def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else (REPO / ".." / "shared" / "reference" / "ko_synth.py")
    ref = load_reference(path.resolve())
    lines = []

    def emit(fn, inp, out, **extra):
        lines.append(json.dumps({"fn": fn, **extra, "in": inp, "out": out}, ensure_ascii=False, separators=(",", ":")))

    # num2sino and its inverse: every number 0..=9999, then the large ones.
    numbers = list(range(0, 10000)) + large_numbers()
    for n in numbers:
        emit("num2sino", n, call(ref.num2sino, n))
    for n in numbers:
        emit("sino2num", ref.num2sino(n), call(ref.sino2num, ref.num2sino(n)))
    for n in numbers[10000::10]:  # the reference also reads unspaced text
        emit("sino2num", ref.num2sino(n, spaced=False), call(ref.sino2num, ref.num2sino(n, spaced=False)))
    # Inputs outside num2sino's image: the reference's lenient parse (and its overflow past u64).
    odd = ["일일", "십십", "만만", "억만", "만억", "일만", "이십 삼", "천 만", "영", "영영", "십영", "",
           "구천구백구십구경", "천팔백사십오경", "천팔백사십사경 육천칠백사십사조 칠백삼십칠억 구백오십오만 천육백십오",
           "천팔백사십사경 육천칠백사십사조 칠백삼십칠억 구백오십오만 천육백십육", "천\u3000이", "1234", "백a"]
    for s in odd:
        emit("sino2num", s, call(ref.sino2num, s))

    # Dates: a fixed list of ~500 (year, month, day), plus edges.
    dates = [(1900 + (i * 37) % 200, 1 + (i * 5) % 12, 1 + (i * 11) % 31) for i in range(480)]
    dates += [(2024, 6, 10), (2000, 2, 29), (1000, 1, 1), (999, 12, 31), (2100, 3, 1), (10000, 10, 10),
              (10001, 1, 20), (1, 1, 1), (0, 1, 1), (2024, 0, 1), (2024, 13, 1)]
    for y, m, d in dates:
        emit("date", [y, m, d], call(ref.date_read, y, m, d))

    # Native numerals: every 1..=99 with each counter and without one, plus the rejected ends.
    for n in list(range(0, 101)):
        for c in COUNTERS + [None]:
            emit("native", [n, c], call(ref.native, n, c))

    # Josa: every reference noun x every pair, then one-syllable nouns covering every final T.
    pairs = list(ref.JOSA)
    words = list(ref.DEFAULT_NOUNS) + [chr(ref.SBASE + (i * 3733) % ref.SCOUNT) for i in range(300)]
    for w in words:
        for p in pairs:
            emit("josa", [w, p], call(ref.attach_josa, w, p))

    # Jamo: decompose the nouns and 500 syllable strings; compose their decompositions; and a few
    # inputs the reference rejects.
    strings = list(ref.DEFAULT_NOUNS) + syllable_strings(ref)
    for w in strings:
        emit("jamo_dec", w, call(ref.jamo_decompose, w))
    for w in strings:
        emit("jamo_com", ref.jamo_decompose(w), call(ref.jamo_compose, ref.jamo_decompose(w)))
    for w in ["abc", "한a", "ㄱ", ""]:
        emit("jamo_dec", w, call(ref.jamo_decompose, w))
    for s in ["ㅏ", "ㄱ", "ㄸㅏㄸ", "ㄱㅏㄳㅏ", "가", "ㄱㅏㅏ", "ㅇㅏㄴㅈ", "ㄷㅏㄺㅇㅣ", "ㄷㅏㄹㄱㅣ", "ㅇㅏㄶ", ""]:
        emit("jamo_com", s, call(ref.jamo_compose, s))

    # Grading: surrounding whitespace is every character Python's str.isspace() accepts.
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    not_spaces = ["\u200b", "\ufeff", "\u180e", "\u00ad", "_"]
    for c in spaces + not_spaces:
        for pred, gold in [(c + "천" + c, "천"), (c + c + "천", "천" + c), ("천" + c + "이", "천이")]:
            emit("grade", [pred, gold], ref.grade(pred, gold, True))
            emit("grade_lenient", [pred, gold], ref.grade(pred, gold, False))
    for pred, gold in [("", ""), ("  ", ""), ("천이", "천 이"), ("만 일", "만일"), ("사과를", "사과을")]:
        emit("grade", [pred, gold], ref.grade(pred, gold, True))
        emit("grade_lenient", [pred, gold], ref.grade(pred, gold, False))

    # Prompts the reference's make_example really produces (seeded), with the item they are about.
    for seed in (42, 7):
        rng = random.Random(seed)
        for task in ["num2sino", "sino2num", "josa", "jamo_dec", "jamo_com", "date", "native"]:
            for _ in range(10):
                p, a = ref.make_example(task, rng, ref.DEFAULT_NOUNS)
                emit("prompt", item_of(task, p, a), {"prompt": p, "answer": a}, task=task)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} lines, {OUT.stat().st_size} bytes to {OUT}")


def item_of(task, prompt, answer):
    """The item a reference prompt is about, in the shape the Rust test rebuilds the prompt from."""
    tail = prompt.split(": ", 1)[-1]
    if task == "num2sino":
        return int(tail)
    if task == "sino2num":
        return int(answer)
    if task == "josa":
        w, pair = re.fullmatch(r"'(.+)' 뒤에 '(.+)' 중 알맞은 조사를 붙여 쓰세요\.", prompt).groups()
        return [w, pair]
    if task == "jamo_dec":
        return tail
    if task == "jamo_com":
        return answer
    if task == "date":
        return [int(x) for x in tail.split("-")]
    if task == "native":
        n, c = re.fullmatch(r"(\d+)(\D+)", tail).groups()
        return [int(n), c]
    raise ValueError(task)


if __name__ == "__main__":
    main()
