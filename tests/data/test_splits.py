from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import load_decathlon_datalist

from monai_neurosql.data import read_datalist, subject_stratified_split, write_datalist

subject_tables = st.lists(
    st.tuples(st.integers(0, 3), st.integers(1, 6)),  # (label, number of slices) per subject
    min_size=1, max_size=60,
)


def _records(table):
    return [{"image": f"/data/s{s}_{k}.jpg", "subject": f"S{s:03d}", "label": label}
            for s, (label, slices) in enumerate(table) for k in range(slices)]


@settings(max_examples=60, deadline=None)
@given(table=subject_tables, seed=st.integers(0, 1000))
def test_split_properties(table, seed):
    records = _records(table)
    split = subject_stratified_split(records, (0.8, 0.1, 0.1), seed=seed, min_subjects=0)
    # with the default minimum of one subject per split, a split that would be empty is refused up front
    if any(not items for items in split.values()):
        with pytest.raises(ValueError, match=f"{len(table)} subjects .* fewer than 1"):
            subject_stratified_split(records, (0.8, 0.1, 0.1), seed=seed)
    else:
        assert subject_stratified_split(records, (0.8, 0.1, 0.1), seed=seed) == split
    subjects = {name: {r["subject"] for r in items} for name, items in split.items()}
    # no subject in two splits, every record exactly once
    assert not subjects["training"] & subjects["validation"]
    assert not subjects["training"] & subjects["test"]
    assert not subjects["validation"] & subjects["test"]
    assert sorted(r["image"] for items in split.values() for r in items) == sorted(r["image"] for r in records)
    # per class, each split holds its share of the class's subjects up to rounding
    per_class = Counter(label for label, _ in table)
    for name, fraction in zip(("training", "validation", "test"), (0.8, 0.1, 0.1)):
        got = Counter(next(r["label"] for r in split[name] if r["subject"] == s) for s in subjects[name])
        for label, count in per_class.items():
            assert abs(got[label] - fraction * count) < 1.0 + 1e-9
        assert [r["index"] for r in split[name]] == list(range(len(split[name])))
    # deterministic
    assert split == subject_stratified_split(records, (0.8, 0.1, 0.1), seed=seed, min_subjects=0)


def test_two_way_split_and_errors():
    records = _records([(0, 2)] * 10)
    split = subject_stratified_split(records, (0.7, 0.3))
    assert set(split) == {"training", "validation"}
    assert len({r["subject"] for r in split["training"]}) == 7
    with pytest.raises(ValueError, match="sum"):
        subject_stratified_split(records, (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="has no 'subject'"):
        subject_stratified_split([{"image": "a.jpg", "label": 0}])


def test_datalist_roundtrip(tmp_path):
    base = tmp_path / "data"
    records = [{"image": str(base / f"c/OAS1_{i:04d}_MR1_mpr-1_1.jpg"), "subject": f"OAS1_{i:04d}", "label": i % 2}
               for i in range(20)]
    split = subject_stratified_split(records, seed=3)
    path = write_datalist(split, tmp_path / "run" / "datalist.json", base_dir=base, seed=3)
    raw = json.loads(path.read_text())
    assert raw["training"][0]["image"].startswith("c/")  # relative: publishable
    assert raw["meta"]["seed"] == 3 and raw["meta"]["counts"]["training"]["subjects"] == 16
    assert read_datalist(path) == split
    # MONAI reads it as a datalist
    monai_items = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key="training", base_dir=str(base))
    assert [m["image"] for m in monai_items] == [r["image"] for r in split["training"]]


@pytest.mark.parametrize("per_class,classes,short,works", [
    (3, 3, "validation 0, test 0", [0.5, 0.25, 0.25]),  # issue 10: 3 subjects per class, empty validation split
    (6, 3, "test 0", [0.7, 0.15, 0.15]),  # issue 10: 6 per class, empty test split
])
def test_too_few_subjects_are_refused_with_fractions_that_work(per_class, classes, short, works):
    records = _records([(c, 2) for c in range(classes) for _ in range(per_class)])
    n = per_class * classes
    with pytest.raises(ValueError, match=rf"^{n} subjects \({per_class} in class 0, .*\) split by class with fractions "
                                         rf"\[0.8, 0.1, 0.1\] leave {short} subject\(s\), fewer than 1; fractions "
                                         rf"{re.escape(str(works))} would give"):
        subject_stratified_split(records)
    split = subject_stratified_split(records, works)  # the suggestion works
    assert all(split.values())
    with pytest.raises(ValueError, match="no fractions give 3 splits of 1\\+ subjects: add subjects or use 2 splits"):
        subject_stratified_split(_records([(0, 1), (0, 1)]))
