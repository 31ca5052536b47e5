"""Write the small example data files of ``configs/examples/`` from data already installed with the project.

Nothing is downloaded; every file is a seeded, deterministic selection:

* ``wine.csv`` / ``wine_test.csv`` — scikit-learn's wine recognition data (``sklearn.datasets.load_wine`` reads
  a CSV shipped inside the scikit-learn wheel): 178 wines, 13 chemical measurements, 3 cultivars. The label
  column holds the class names as text (``class_0``, ``class_1``, ``class_2``); a stratified 80/20 split.
* ``pairs.jsonl`` / ``docs.jsonl`` — question → answer pairs of the chatterbot corpus (the ``chatterbot-corpus``
  wheel, read by :func:`negkit.data.text.load_chatterbot`): 400 distinct questions, namely the 74 with 2 to 8
  answers and a seeded draw of those with one. The questions with several answers are written alternately as one
  row with a list of answers and as one row per answer (the question repeated), to show both conventions. Fields
  ``question``, ``answer``, ``group`` (the chatterbot category). ``docs.jsonl`` (fields ``id``, ``text``) holds
  300 answers of other questions as distractors.
* ``ratings.csv`` — MovieLens-100k ratings (the ``recbole`` wheel's ``ml-100k.inter``) of 250 users drawn among
  those with at most 40 ratings, all their ratings, in the file's order; columns
  ``user_id,movie_id,rating,timestamp``.

Run from the repository root: ``.venv/bin/python scripts/make_examples.py`` (``--out DIR`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from negkit.data.sources import package_dir
from negkit.data.text import load_chatterbot

SEED = 0
ROOT = Path(__file__).resolve().parent.parent
NUM_QUERIES = 400
NUM_DISTRACTORS = 300
NUM_USERS = 250
MAX_RATINGS = 40


def write_wine(out: Path, rng: np.random.Generator) -> list[Path]:
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True)
    frame = wine.frame.drop(columns="target")
    frame["label"] = [str(wine.target_names[t]) for t in wine.target]
    test_rows: list[int] = []
    for label in sorted(frame["label"].unique()):
        members = np.flatnonzero(frame["label"].to_numpy() == label)
        test_rows += rng.choice(members, size=round(0.2 * len(members)), replace=False).tolist()
    is_test = np.zeros(len(frame), dtype=bool)
    is_test[test_rows] = True
    paths = [out / "wine.csv", out / "wine_test.csv"]
    frame[~is_test].to_csv(paths[0], index=False)
    frame[is_test].to_csv(paths[1], index=False)
    return paths


def write_pairs(out: Path, rng: np.random.Generator) -> list[Path]:
    data = load_chatterbot(unique_queries=True)
    several = [i for i, ids in enumerate(data.relevant) if 1 < len(ids) <= 8]
    single = [i for i, ids in enumerate(data.relevant) if len(ids) == 1]
    chosen = several + rng.choice(single, size=NUM_QUERIES - len(several), replace=False).tolist()
    chosen = sorted(chosen)  # the corpus's order (grouped by category file)
    rows: list[dict[str, object]] = []
    for position, i in enumerate(chosen):
        answers = [data.documents[j] for j in data.relevant[i]]
        query, group = data.queries[i], data.groups[i]
        if len(answers) == 1:
            rows.append({"question": query, "answer": answers[0], "group": group})
        elif position % 2:
            rows.append({"question": query, "answer": answers, "group": group})
        else:
            rows += [{"question": query, "answer": answer, "group": group} for answer in answers]
    used = {j for i in chosen for j in data.relevant[i]}
    others = [j for j in range(data.num_documents) if j not in used]
    distractors = sorted(rng.choice(others, size=min(NUM_DISTRACTORS, len(others)), replace=False).tolist())
    docs = [{"id": f"doc-{k:03d}", "text": data.documents[j]} for k, j in enumerate(distractors, start=1)]
    paths = [out / "pairs.jsonl", out / "docs.jsonl"]
    for path, records in zip(paths, (rows, docs), strict=True):
        with path.open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return paths


def write_ratings(out: Path, rng: np.random.Generator) -> list[Path]:
    source = package_dir("recbole") / "dataset_example" / "ml-100k" / "ml-100k.inter"
    with source.open(encoding="latin-1", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = [column.split(":")[0] for column in next(reader)]
        rows = list(reader)
    user, item, rating, timestamp = (header.index(c) for c in ("user_id", "item_id", "rating", "timestamp"))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[user]] = counts.get(row[user], 0) + 1
    eligible = sorted((u for u, n in counts.items() if n <= MAX_RATINGS), key=int)
    users = set(rng.choice(eligible, size=NUM_USERS, replace=False).tolist())
    path = out / "ratings.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["user_id", "movie_id", "rating", "timestamp"])
        for row in rows:
            if row[user] in users:
                writer.writerow([row[user], row[item], row[rating], int(float(row[timestamp]))])
    return [path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "configs" / "examples", help="output folder")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for write in (write_wine, write_pairs, write_ratings):
        written += write(out, np.random.default_rng(SEED))
    for path in written:
        print(f"{path}  ({path.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
