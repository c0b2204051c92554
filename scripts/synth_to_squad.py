#!/usr/bin/env python3
"""Turn `lore synth` output into a SQuAD 2.0 file, so `lore eval --retrieval-only` can
measure the generated questions: does each find the passage it was written from?

  synth_to_squad.py PAIRS.jsonl OUT.json [--title NAME]

One article; its paragraphs are the distinct passages in the order first seen; every
pair is an answerable question of its passage (the answer where the passage holds it).
Also prints how many answers the passage holds word for word ("grounded").
"""
import argparse
import json
import re
import string


def normalize(s: str) -> str:
    s = "".join(c for c in s.lower() if c not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", nargs="+")
    ap.add_argument("out")
    ap.add_argument("--title", default="synth")
    args = ap.parse_args()
    paragraphs: dict[str, list] = {}
    grounded = total = originals = 0
    for file in args.pairs:
        with open(file, encoding="utf-8") as f:
            for n, line in enumerate(f):
                pair = json.loads(line)
                # One line per passage: `lore eval` finds a gold paragraph by its line.
                passage = " ".join(pair["passage"].split())
                qas = paragraphs.setdefault(passage, [])
                start = passage.find(pair["answer"])
                answers = [{"text": pair["answer"], "answer_start": start}] if start >= 0 else [{"text": pair["answer"], "answer_start": 0}]
                qas.append({"id": f"{file}:{n}", "question": pair["question"], "answers": answers, "is_impossible": False})
                total += 1
                originals += not pair.get("paraphrase", False)
                grounded += normalize(pair["answer"]) in normalize(passage)
    squad = {"version": "v2.0", "data": [{"title": args.title, "paragraphs": [
        {"context": p, "qas": qas} for p, qas in paragraphs.items()]}]}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(squad, f, ensure_ascii=False)
    print(f"{total} questions ({originals} written, {total - originals} paraphrases) on {len(paragraphs)} passages; "
          f"answer found in its passage: {grounded}/{total} ({grounded / max(total, 1):.2f})")


if __name__ == "__main__":
    main()
