"""The user's own data files (negkit.data.files) and the vector views they feed.

Every test writes a small file into tmp_path and compares what comes out with an independent computation on the
same numbers; every bad-file case checks that the message names the file and, where it applies, column and row.
"""

import json
import re
import tomllib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from negkit.data import (
    DataFileError,
    ViewConfig,
    load_interactions_file,
    load_labelled_file,
    load_pairs_file,
    random_views,
    stratified_split,
)

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")


def raises(path: Path, *parts: str):
    """pytest.raises(DataFileError) whose message contains the file's path and every part."""
    pattern = "".join(f"(?=[\\s\\S]*{re.escape(part)})" for part in (str(path), *parts))
    return pytest.raises(DataFileError, match=pattern)


# ------------------------------------------------------------------------------------------ labelled files


def wine_like(n_per_class: int = 5, seed: int = 0) -> "pd.DataFrame":
    """A small table: three numeric features (one constant), text labels, in mixed row order."""
    rng = np.random.default_rng(seed)
    labels = np.array(["emu", "cat", "dog"] * n_per_class)
    return pd.DataFrame(
        {
            "alcohol": rng.normal(13, 1, len(labels)).round(3),
            "label": labels,
            "ash": rng.integers(1, 9, len(labels)),
            "const": np.full(len(labels), 4.5),
        }
    )


def standardised(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[np.ptp(train, axis=0) == 0] = 1.0
    return (train - mean) / std, (test - mean) / std


def test_csv_with_a_test_file_maps_text_labels_and_standardises_with_train_statistics(tmp_path):
    train, test = wine_like(5, seed=0), wine_like(2, seed=1)
    train.to_csv(tmp_path / "train.csv", index=False)
    test[["label", "const", "ash", "alcohol"]].to_csv(tmp_path / "test.csv", index=False)  # other column order
    data = load_labelled_file(tmp_path / "train.csv", label="label", test=tmp_path / "test.csv")

    columns = ["alcohol", "ash", "const"]
    want_train, want_test = standardised(train[columns].to_numpy(float), test[columns].to_numpy(float))
    assert data.train_x.dtype == torch.float32 and data.train_x.shape == (15, 3) and data.test_x.shape == (6, 3)
    torch.testing.assert_close(data.train_x, torch.tensor(want_train, dtype=torch.float32))
    torch.testing.assert_close(data.test_x, torch.tensor(want_test, dtype=torch.float32))
    assert data.class_names == ("cat", "dog", "emu") and data.num_classes == 3
    assert data.train_y.tolist() == [{"cat": 0, "dog": 1, "emu": 2}[v] for v in train["label"]]
    assert data.test_y.tolist() == [{"cat": 0, "dog": 1, "emu": 2}[v] for v in test["label"]]
    assert data.name == "train" and data.input_shape == (3,)
    for part in ("train.csv", "15 rows", "3 features", "3 classes", "test.csv"):
        assert part in data.description


def test_csv_without_test_file_is_the_seeded_stratified_split(tmp_path):
    table = wine_like(10)
    table.to_csv(tmp_path / "wine.csv", index=False)
    data = load_labelled_file(tmp_path / "wine.csv", label="label", test_fraction=0.3, seed=4, name="w")
    y = torch.tensor([{"cat": 0, "dog": 1, "emu": 2}[v] for v in table["label"]])
    train_index, test_index = stratified_split(y, 0.3, 4)
    x = table[["alcohol", "ash", "const"]].to_numpy(float)
    want_train, want_test = standardised(x[train_index.numpy()], x[test_index.numpy()])
    torch.testing.assert_close(data.train_x, torch.tensor(want_train, dtype=torch.float32))
    torch.testing.assert_close(data.test_x, torch.tensor(want_test, dtype=torch.float32))
    assert torch.equal(data.train_y, y[train_index]) and torch.equal(data.test_y, y[test_index])
    assert torch.bincount(data.test_y).tolist() == [3, 3, 3] and data.name == "w"
    assert "seeded stratified split" in data.description and "seed 4" in data.description
    again = load_labelled_file(tmp_path / "wine.csv", label="label", test_fraction=0.3, seed=4)
    other = load_labelled_file(tmp_path / "wine.csv", label="label", test_fraction=0.3, seed=5)
    assert torch.equal(again.test_y, data.test_y) and not torch.equal(other.train_x, data.train_x)


def test_parquet_gives_the_same_data_as_csv(tmp_path):
    table = wine_like(6)
    table.to_csv(tmp_path / "t.csv", index=False)
    table.to_parquet(tmp_path / "t.parquet", index=False)
    a = load_labelled_file(tmp_path / "t.csv", label="label")
    b = load_labelled_file(tmp_path / "t.parquet", label="label")
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y) and a.class_names == b.class_names


def test_integer_labels_are_remapped_to_contiguous_ids_keeping_their_values_as_names(tmp_path):
    x = np.arange(24, dtype=np.float64).reshape(12, 2) ** 1.5
    labels = np.array([9, 3, 7, 3] * 3)
    np.savez(tmp_path / "v.npz", features=x, y=labels)
    np.savez(tmp_path / "v_test.npz", features=x[:4], y=labels[:4])
    data = load_labelled_file(tmp_path / "v.npz", label="y", test=tmp_path / "v_test.npz")
    assert data.class_names == ("3", "7", "9")
    assert data.train_y.tolist() == [{3: 0, 7: 1, 9: 2}[v] for v in labels]
    want_train, want_test = standardised(x, x[:4])
    torch.testing.assert_close(data.train_x, torch.tensor(want_train, dtype=torch.float32))
    torch.testing.assert_close(data.test_x, torch.tensor(want_test, dtype=torch.float32))


def test_npz_images_are_scaled_from_0_255_and_get_a_channel_axis(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 5, 6), dtype=np.uint8)
    np.savez(tmp_path / "img.npz", x=images, label=np.array(["a", "b"] * 4), note=np.zeros(3))
    data = load_labelled_file(tmp_path / "img.npz", label="label", test_fraction=0.25)
    assert data.input_shape == (1, 5, 6) and data.train_x.dtype == torch.float32
    both = torch.cat([data.train_x, data.test_x]).sort(dim=0).values
    want = torch.tensor(images[:, None] / 255.0, dtype=torch.float32).sort(dim=0).values
    torch.testing.assert_close(both, want)
    assert "images" in data.description

    floats = rng.random((6, 3, 4, 4)).astype(np.float32)  # already in [0, 1]: unchanged, not standardised
    np.savez(tmp_path / "rgb.npz", features=floats, label=np.array([0, 1, 1, 0, 1, 0]))
    rgb = load_labelled_file(tmp_path / "rgb.npz", label="label", test=tmp_path / "rgb.npz")
    assert torch.equal(rgb.train_x, torch.from_numpy(floats))


def test_npy_structured_array_and_plain_array_with_a_label_column_index(tmp_path):
    rows = [(1.0, 2, b"x"), (2.0, 4, b"y"), (4.0, 1, b"x"), (8.0, 3, b"y"), (3.0, 5, b"x"), (5.0, 0, b"y")]
    structured = np.array(rows, dtype=[("f", "f8"), ("g", "i4"), ("kind", "S1")])
    np.save(tmp_path / "s.npy", structured)
    data = load_labelled_file(tmp_path / "s.npy", label="kind", test=tmp_path / "s.npy")
    x = np.array([[r[0], r[1]] for r in rows])
    torch.testing.assert_close(data.train_x, torch.tensor(standardised(x, x)[0], dtype=torch.float32))
    assert data.class_names == ("x", "y") and data.train_y.tolist() == [0, 1, 0, 1, 0, 1]

    plain = np.column_stack([x, [5, 6, 5, 6, 5, 6]])
    np.save(tmp_path / "p.npy", plain)
    last = load_labelled_file(tmp_path / "p.npy", label="-1", test=tmp_path / "p.npy")
    torch.testing.assert_close(last.train_x, data.train_x)
    assert last.class_names == ("5", "6") and last.train_y.tolist() == [0, 1, 0, 1, 0, 1]
    with raises(tmp_path / "p.npy", "column index", "'kind'"):
        load_labelled_file(tmp_path / "p.npy", label="kind")


def test_pt_dict_of_tensors_with_text_labels(tmp_path):
    x = torch.arange(40, dtype=torch.float32).view(10, 4) % 7
    torch.save({"x": x, "label": ["b", "a"] * 5, "ids": torch.arange(10)}, tmp_path / "d.pt")
    data = load_labelled_file(tmp_path / "d.pt", label="label", test=tmp_path / "d.pt")
    torch.testing.assert_close(data.train_x, torch.tensor(standardised(x.double().numpy(), x.numpy())[0]).float())
    assert data.class_names == ("a", "b") and data.train_y.tolist() == [1, 0] * 5


@pytest.mark.parametrize(
    ("content", "parts"),
    [
        ("a,b,label\n1,2,x\n3,,y\n", ("column 'b'", "row 2", "missing value")),
        ("a,b,label\n1,2,x\n3,four,y\n5,6,x\n", ("column 'b'", "row 2", "non-numeric value 'four'")),
        ("a,b,label\n1,2,x\n3,4,y\ninf,6,x\n", ("column 'a'", "row 3", "non-finite")),
        ("a,label\n1,x\n2,\n", ("column 'label'", "row 2", "missing label")),
        ("a,label\n1,x\n2,x\n3,x\n", ("column 'label'", "single class", "'x'")),
        ("a,label\n1,x\n2,x\n3,y\n", ("column 'label'", "class 'y' has 1 sample")),
        ("label\nx\ny\n", ("no feature columns",)),
        ("a,label\n", ("empty file", "no data rows")),
        ("", ("empty file",)),
        ('a,label\n1,"x\n', ("cannot be read as CSV",)),
        ("a,b\n1,2\n3,4,5,6\n", ("cannot be read as CSV",)),
    ],
)
def test_bad_labelled_csv_names_file_column_and_row(tmp_path, content, parts):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with raises(path, *parts):
        load_labelled_file(path, label="label")


def test_bad_labelled_files_missing_unknown_misspelt(tmp_path):
    wine_like().to_csv(tmp_path / "w.csv", index=False)
    with raises(tmp_path / "w.csv", "no column 'lable'", "Did you mean 'label'?", "'alcohol', 'label'"):
        load_labelled_file(tmp_path / "w.csv", label="lable")
    with raises(tmp_path / "w.csv", "no column 'Label'", "Did you mean 'label'?"):
        load_labelled_file(tmp_path / "w.csv", label="Label")
    with raises(tmp_path / "nope.csv", "file not found"):
        load_labelled_file(tmp_path / "nope.csv", label="label")
    (tmp_path / "w.txt").write_text("a,label\n1,x\n")
    with raises(tmp_path / "w.txt", "unknown suffix '.txt'", ".csv, .parquet, .npz, .npy, .pt"):
        load_labelled_file(tmp_path / "w.txt", label="label")
    (tmp_path / "broken.parquet").write_bytes(b"not a parquet file at all")
    with raises(tmp_path / "broken.parquet", "cannot be read as Parquet"):
        load_labelled_file(tmp_path / "broken.parquet", label="label")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with raises(tmp_path / "broken.npz", "cannot be read as NPZ"):
        load_labelled_file(tmp_path / "broken.npz", label="label")
    (tmp_path / "broken.pt").write_bytes(b"not torch")
    with raises(tmp_path / "broken.pt", "cannot be read as .pt"):
        load_labelled_file(tmp_path / "broken.pt", label="label")
    with pytest.raises(ValueError, match="test_fraction"):
        load_labelled_file(tmp_path / "w.csv", label="label", test_fraction=1.0)


def test_bad_labelled_arrays_and_test_files(tmp_path):
    x = np.ones((4, 2))
    x[2, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, label=np.array([0, 1, 0, 1]))
    with raises(tmp_path / "nan.npz", "array 'x', feature 1", "row 3"):
        load_labelled_file(tmp_path / "nan.npz", label="label")
    np.savez(tmp_path / "two.npz", a=np.ones((4, 2)), b=np.ones((4, 2)), label=np.array([0, 1, 0, 1]))
    with raises(tmp_path / "two.npz", "which array holds the features", "'a', 'b'"):
        load_labelled_file(tmp_path / "two.npz", label="label")
    with raises(tmp_path / "two.npz", "no array 'labels'", "Did you mean 'label'?"):
        load_labelled_file(tmp_path / "two.npz", label="labels")
    np.savez(tmp_path / "obj.npz", x=np.ones((2, 2)), label=np.array(["a", 1], dtype=object))
    with raises(tmp_path / "obj.npz", "array 'label' holds Python objects"):
        load_labelled_file(tmp_path / "obj.npz", label="label")
    np.savez(tmp_path / "short.npz", x=np.ones((4, 2)), label=np.array([0, 1, 0]))
    with raises(tmp_path / "short.npz", "3 entries", "4 rows"):
        load_labelled_file(tmp_path / "short.npz", label="label")

    wine_like(4).to_csv(tmp_path / "train.csv", index=False)
    unseen = wine_like(1).replace({"label": {"dog": "fox"}})
    unseen.to_csv(tmp_path / "unseen.csv", index=False)
    with raises(tmp_path / "unseen.csv", "column 'label'", "row 3", "'fox' does not occur", "train.csv"):
        load_labelled_file(tmp_path / "train.csv", label="label", test=tmp_path / "unseen.csv")
    wine_like(1).drop(columns="ash").to_csv(tmp_path / "fewer.csv", index=False)
    with raises(tmp_path / "fewer.csv", "no column 'ash'"):
        load_labelled_file(tmp_path / "train.csv", label="label", test=tmp_path / "fewer.csv")
    wine_like(1).assign(extra=1).to_csv(tmp_path / "more.csv", index=False)
    with raises(tmp_path / "more.csv", "column 'extra'", "not a column of the training file"):
        load_labelled_file(tmp_path / "train.csv", label="label", test=tmp_path / "more.csv")


# -------------------------------------------------------------------------------------------- text pairs

PAIRS = [
    {"question": "What is  a cat?", "answer": "A small feline.", "group": "animals"},
    {"question": "What is a dog?", "answer": ["A loyal canine.", "Man's best friend."], "group": "animals"},
    {"question": "What is a cat?", "answer": "A pet that purrs.", "group": "animals"},  # repeated query
    {"question": "Capital of France?", "answer": "Paris.", "group": "geo"},
    {"question": "Biggest city of France?", "answer": ["Paris."], "group": "geo"},  # shared positive
]


def expected_pairs(rows: list[dict]) -> tuple[list[str], list[str], list[set[str]], list[str]]:
    """Independent grouping: distinct normalised queries in first-seen order, their positive texts, groups."""
    queries, positives, groups, documents = [], defaultdict(set), {}, []
    for row in rows:
        query = " ".join(row["question"].split())
        answers = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
        if query not in groups:
            queries.append(query)
            groups[query] = row.get("group", "")
        for answer in answers:
            positives[query].add(answer)
            if answer not in documents:
                documents.append(answer)
    return queries, documents, [positives[q] for q in queries], [groups[q] for q in queries]


def check_pairs(data, rows: list[dict], extra: tuple[str, ...] = ()) -> None:
    queries, documents, positives, groups = expected_pairs(rows)
    assert data.queries == queries and data.groups == groups
    assert data.documents == documents + [d for d in extra if d not in documents]
    assert [{data.documents[j] for j in ids} for ids in data.relevant] == positives


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_jsonl_pairs_group_repeated_queries_and_take_lists_of_positives(tmp_path):
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    data = load_pairs_file(tmp_path / "pairs.jsonl", query="question", positive="answer")
    check_pairs(data, PAIRS)
    assert len(data.queries) == 4 and data.relevant[0] == (0, 3) and data.relevant[2] == data.relevant[3] == (4,)
    assert data.name == "pairs" and "pairs.jsonl (5 rows" in data.description and "4 queries" in data.description


def test_csv_pairs_read_json_lists_and_parquet_list_columns(tmp_path):
    frame = pd.DataFrame(PAIRS)
    as_csv = frame.assign(answer=[json.dumps(a) if isinstance(a, list) else a for a in frame["answer"]])
    as_csv.to_csv(tmp_path / "pairs.csv", index=False)
    check_pairs(load_pairs_file(tmp_path / "pairs.csv", query="question", positive="answer"), PAIRS)
    as_lists = frame.assign(answer=[a if isinstance(a, list) else [a] for a in frame["answer"]])
    as_lists.to_parquet(tmp_path / "pairs.parquet", index=False)
    check_pairs(load_pairs_file(tmp_path / "pairs.parquet", query="question", positive="answer"), PAIRS)
    frame.drop(columns="group").assign(answer=[a if isinstance(a, str) else a[0] for a in frame["answer"]]).to_parquet(
        tmp_path / "plain.parquet"
    )
    plain = load_pairs_file(tmp_path / "plain.parquet", query="question", positive="answer")
    assert plain.groups == [""] * 4 and plain.documents[1] == "A loyal canine."


def test_corpus_adds_distractors_once(tmp_path):
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    corpus = [{"id": 1, "text": "An unrelated document."}, {"id": "d2", "text": "Paris."}, {"id": 3, "text": "Other."}]
    write_jsonl(tmp_path / "docs.jsonl", corpus)
    data = load_pairs_file(
        tmp_path / "pairs.jsonl", query="question", positive="answer", corpus=tmp_path / "docs.jsonl"
    )
    check_pairs(data, PAIRS, extra=("An unrelated document.", "Paris.", "Other."))
    assert data.num_documents == 7 and "corpus docs.jsonl: 3 documents" in data.description
    pd.DataFrame(corpus).astype(str).to_csv(tmp_path / "docs.csv", index=False)
    again = load_pairs_file(tmp_path / "pairs.jsonl", query="question", positive="answer", corpus=tmp_path / "docs.csv")
    assert again.documents == data.documents


@pytest.mark.parametrize(
    ("rows", "parts"),
    [
        ([*PAIRS, {"question": "  ", "answer": "x"}], ("column 'question'", "row 6", "empty query text")),
        ([*PAIRS, {"question": "q", "answer": ""}], ("column 'answer'", "row 6", "empty positive text")),
        ([{"question": "q", "answer": "a"}, {"question": "r", "answer": None}], ("row 2", "missing positive")),
        ([*PAIRS, {"question": "q", "answer": []}], ("column 'answer'", "row 6", "the list is empty")),
        ([*PAIRS, {"question": "q", "answer": ["a", 3]}], ("column 'answer'", "row 6", "bad list", "not a string")),
        ([*PAIRS, {"question": "q", "answer": {"a": 1}}], ("row 6", "a string or a list of strings")),
        ([*PAIRS, {"question": 5, "answer": "a"}], ("column 'question'", "row 6", "must be text")),
        ([*PAIRS, {"question": "q"}], ("column 'answer'", "row 6", "no field 'answer'")),
        ([{"question": "q", "answer": "a"}, {"question": " q ", "answer": "b"}], ("1 distinct query",)),
    ],
)
def test_bad_jsonl_pairs_name_file_column_and_row(tmp_path, rows, parts):
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, rows)
    with raises(path, *parts):
        load_pairs_file(path, query="question", positive="answer")


def test_bad_pair_files(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "a", "answer": "b"}\n\n{"question": "c", "answer": \n')
    with raises(path, "row 3", "not valid JSON"):
        load_pairs_file(path, query="question", positive="answer")
    path.write_text('["a", "b"]\n')
    with raises(path, "row 1", "JSON object"):
        load_pairs_file(path, query="question", positive="answer")
    write_jsonl(path, PAIRS)
    with raises(path, "no column 'questions'", "Did you mean 'question'?", "'question', 'answer', 'group'"):
        load_pairs_file(path, query="questions", positive="answer")
    csv = tmp_path / "p.csv"
    csv.write_text('question,answer\nq1,a1\nq2,"[""a2"", oops]"\n')
    with raises(csv, "column 'answer'", "row 2", "bad list of positives"):
        load_pairs_file(csv, query="question", positive="answer")
    csv.write_text("question,answer\nq1,a1\n,a2\n")
    with raises(csv, "column 'question'", "row 2", "empty query text"):
        load_pairs_file(csv, query="question", positive="answer")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with raises(tmp_path / "empty.jsonl", "empty file"):
        load_pairs_file(tmp_path / "empty.jsonl", query="question", positive="answer")
    with raises(tmp_path / "none.jsonl", "file not found"):
        load_pairs_file(tmp_path / "none.jsonl", query="question", positive="answer")
    with raises(tmp_path, "is a folder") if _no_datasets() else pytest.raises(DataFileError):
        load_pairs_file(tmp_path, query="question", positive="answer")


def _no_datasets() -> bool:
    try:
        import datasets  # noqa: F401
    except ImportError:
        return True
    return False


def test_bad_corpus_files(tmp_path):
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)

    def load(corpus: Path):
        return load_pairs_file(tmp_path / "pairs.jsonl", query="question", positive="answer", corpus=corpus)

    docs = tmp_path / "docs.jsonl"
    write_jsonl(docs, [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}])
    with raises(docs, "column 'id'", "row 3", "duplicate id 'a'", "first at row 1"):
        load(docs)
    write_jsonl(docs, [{"id": "a", "body": "x"}])
    with raises(docs, "no column 'text'", "'id', 'body'"):
        load(docs)
    write_jsonl(docs, [{"key": "a", "text": "x"}])
    with raises(docs, "no column 'id'"):
        load(docs)
    write_jsonl(docs, [{"id": "a", "text": "x"}, {"id": "b", "text": " "}])
    with raises(docs, "column 'text'", "row 2", "empty document text"):
        load(docs)


def test_hugging_face_dataset_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    # an Arrow column has one type: every answer a list (strings and lists cannot share a column)
    rows = [{**row, "answer": row["answer"] if isinstance(row["answer"], list) else [row["answer"]]} for row in PAIRS]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    data = load_pairs_file(tmp_path / "hf", query="question", positive="answer")
    check_pairs(data, rows)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "hf_dict"))
    check_pairs(load_pairs_file(tmp_path / "hf_dict", query="question", positive="answer"), rows)


# ------------------------------------------------------------------------------------------ interactions

# (user, item, time); expected with time: a → train x(t1), z(t2), test y(t3; its t7 duplicate dropped);
# b → train x, test z (tie at t5: the later row is last); c has one item: dropped, its item w stays.
RATINGS = pd.DataFrame(
    {
        "user": ["b", "a", "a", "b", "a", "c", "a"],
        "item": ["x", "y", "x", "z", "y", "w", "z"],
        "ts": [5, 3, 1, 5, 7, 2, 2],
        "rating": [4, 5, 3, 2, 1, 5, 4],
    }
)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_interactions_leave_last_out_by_time_and_by_row_order(tmp_path, suffix):
    path = tmp_path / f"ratings{suffix}"
    RATINGS.to_csv(path, index=False) if suffix == ".csv" else RATINGS.to_parquet(path, index=False)
    data = load_interactions_file(path, user="user", item="item", time="ts")
    assert (data.num_users, data.num_items) == (2, 4)  # users a, b; items w, x, y, z
    assert data.test_items.tolist() == [2, 3]
    assert data.train_users.tolist() == [0, 0, 1] and data.train_items.tolist() == [1, 3, 1]
    assert data.known.tolist() == [[False, True, True, True], [False, True, False, True]]
    assert data.user_features.shape == (2, 0) and data.user_features.dtype == torch.int64
    assert data.item_features.shape == (4, 0) and data.item_features.is_floating_point()
    assert data.user_feature_sizes == () and data.hidden_users.numel() == data.hidden_items.numel() == 0
    for part in (path.name, "7 rows", "1 duplicate", "1 users with fewer than 2", "by 'ts'", "3 train, 2 test"):
        assert part in data.description
    assert 0 < data.known_false_negative_rate() < 1

    rows = load_interactions_file(path, user="user", item="item")  # row order: a → y, x | z; b → x | z
    assert rows.test_items.tolist() == [3, 3]
    assert rows.train_users.tolist() == [1, 0, 0] and rows.train_items.tolist() == [1, 2, 1]
    assert "by row order" in rows.description


def test_interactions_match_an_independent_leave_last_out_on_random_data(tmp_path):
    rng = np.random.default_rng(3)
    n = 400
    frame = pd.DataFrame(
        {
            "u": rng.integers(0, 40, n) * 7,
            "i": [f"item{k}" for k in rng.integers(0, 60, n)],
            "t": rng.integers(0, 50, n),  # many ties
        }
    )
    frame.to_csv(tmp_path / "r.csv", index=False)
    data = load_interactions_file(tmp_path / "r.csv", user="u", item="i", time="t")

    earliest: dict[tuple, tuple] = {}
    for row, (u, i, t) in enumerate(frame.itertuples(index=False, name=None)):
        earliest.setdefault((u, i), (t, row))
        earliest[(u, i)] = min(earliest[(u, i)], (t, row))
    by_user = defaultdict(list)
    for (u, i), (t, row) in earliest.items():
        by_user[u].append((t, row, i))
    users = sorted(u for u, events in by_user.items() if len(events) >= 2)
    items = sorted(set(frame["i"]))
    assert (data.num_users, data.num_items) == (len(users), len(items))
    tests = [items.index(max(by_user[u])[2]) for u in users]
    assert data.test_items.tolist() == tests
    train = sorted((t, row, users.index(u), items.index(i)) for u in users for t, row, i in sorted(by_user[u])[:-1])
    assert data.train_users.tolist() == [e[2] for e in train] and data.train_items.tolist() == [e[3] for e in train]
    assert int(data.known.sum()) == sum(len(by_user[u]) for u in users)


def test_interaction_times_may_be_dates(tmp_path):
    path = tmp_path / "dated.csv"
    path.write_text("user,item,when\n1,10,2024-03-01\n1,11,2024-01-01\n2,10,2023-12-31 23:00\n2,12,2024-01-01\n")
    data = load_interactions_file(path, user="user", item="item", time="when")
    assert data.test_items.tolist() == [0, 2] and data.train_items.tolist() == [0, 1]


def test_interaction_times_may_be_a_parquet_datetime_column(tmp_path):
    times = pd.to_datetime(["2024-02-01", "2024-01-01", "2023-01-01", "2023-01-02"]).tz_localize("Europe/Paris")
    pd.DataFrame({"u": [1, 1, 2, 2], "i": [1, 2, 1, 3], "t": times}).to_parquet(tmp_path / "t.parquet")
    data = load_interactions_file(tmp_path / "t.parquet", user="u", item="i", time="t")
    assert data.test_items.tolist() == [0, 2] and data.train_users.tolist() == [1, 0]


def test_bad_interaction_files(tmp_path):
    path = tmp_path / "r.csv"
    RATINGS.to_csv(path, index=False)
    with raises(path, "no column 'users'", "Did you mean 'user'?", "'user', 'item', 'ts', 'rating'"):
        load_interactions_file(path, user="users", item="item")
    with raises(path, "no column 'time'", "(the time column)"):
        load_interactions_file(path, user="user", item="item", time="time")
    path.write_text("user,item,ts\na,x,1\na,y,2\nb,x,3\nb,x,4\n")
    with raises(path, "only 1 of 2 users", "at least 2"):
        load_interactions_file(path, user="user", item="item", time="ts")
    path.write_text("user,item,ts\na,x,1\n,y,2\n")
    with raises(path, "column 'user'", "row 2", "missing user id"):
        load_interactions_file(path, user="user", item="item")
    path.write_text("user,item,ts\na,x,1\na,y,soon\n")
    with raises(path, "column 'ts'", "row 2", "'soon'", "neither a number nor a date"):
        load_interactions_file(path, user="user", item="item", time="ts")
    path.write_text("user,item,ts\na,x,1\na,y,\n")
    with raises(path, "column 'ts'", "row 2", "missing time"):
        load_interactions_file(path, user="user", item="item", time="ts")
    path.write_text("user,item\n")
    with raises(path, "empty file"):
        load_interactions_file(path, user="user", item="item")
    write_jsonl(tmp_path / "r.jsonl", [{"user": 1, "item": 2}])
    with raises(tmp_path / "r.jsonl", "unknown suffix '.jsonl'", ".csv, .parquet"):
        load_interactions_file(tmp_path / "r.jsonl", user="user", item="item")


# ------------------------------------------------------------------------------------ shipped examples

EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "examples"


def test_the_shipped_example_files_load_with_their_configs_keys():
    wine = tomllib.loads((EXAMPLES / "wine.toml").read_text())["data"]
    data = load_labelled_file(EXAMPLES / wine["train"], label=wine["label"], test=EXAMPLES / wine["test"])
    assert data.num_classes == 3 and data.class_names == ("class_0", "class_1", "class_2")
    assert data.train_x.shape == (142, 13) and data.test_x.shape == (36, 13)

    pairs = tomllib.loads((EXAMPLES / "pairs.toml").read_text())["data"]
    text = load_pairs_file(
        EXAMPLES / pairs["train"], query=pairs["query"], positive=pairs["positive"], corpus=EXAMPLES / pairs["corpus"]
    )
    assert text.num_queries == 400 and sum(len(ids) > 1 for ids in text.relevant) == 74
    assert text.num_documents > 700

    ratings = tomllib.loads((EXAMPLES / "ratings.toml").read_text())["data"]
    feedback = load_interactions_file(
        EXAMPLES / ratings["train"], user=ratings["user"], item=ratings["item"], time=ratings["time"]
    )
    assert feedback.num_users == 250 and len(feedback.train_users) + 250 == 6780
    for name in ("wine.csv", "wine_test.csv", "pairs.jsonl", "docs.jsonl", "ratings.csv"):
        assert (EXAMPLES / name).stat().st_size < 300_000


# ----------------------------------------------------------------------------------------- vector views


def test_vector_views_keep_shape_are_seeded_and_ignore_image_augmentations():
    x = torch.randn(64, 10)
    config = ViewConfig(shift=3, rotation=20, erase=1.0, noise=0.1, dropout=0.2)
    a = random_views(x, config, torch.Generator().manual_seed(1))
    b = random_views(x, config, torch.Generator().manual_seed(1))
    c = random_views(x, config, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b) and not torch.equal(a, c)
    image_only = ViewConfig(shift=3, rotation=20, erase=1.0)  # nothing applies to vectors
    assert torch.equal(random_views(x, image_only, torch.Generator().manual_seed(0)), x)
    with pytest.raises(ValueError, match="dropout"):
        ViewConfig(dropout=1.0)
    with pytest.raises(ValueError, match=r"\[B, d\] vectors"):
        random_views(torch.rand(2, 3, 4), ViewConfig(), torch.Generator())


def test_vector_noise_std_is_in_feature_units_and_not_clipped():
    x = torch.full((2000, 50), 3.0)
    out = random_views(x, ViewConfig(noise=0.5), torch.Generator().manual_seed(0))
    delta = out - x
    assert abs(float(delta.mean())) < 0.01 and abs(float(delta.std()) - 0.5) < 0.01
    assert float(out.max()) > 4.0  # not clipped to [0, 1]


def test_vector_dropout_zeroes_features_at_the_rate_without_rescaling():
    x = torch.rand(2000, 50) + 1.0
    out = random_views(x, ViewConfig(dropout=0.3), torch.Generator().manual_seed(0))
    dropped = out == 0
    assert abs(float(dropped.float().mean()) - 0.3) < 0.01
    assert torch.equal(out[~dropped], x[~dropped])  # kept values unchanged: no 1 / (1 − p) rescaling
    per_row = dropped.float().mean(dim=1)
    assert float(per_row.std()) > 0.02  # independent per row, not one mask for the batch
