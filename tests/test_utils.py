import nibabel as nib
import numpy as np
import pytest

from monai_neurosql.utils import atomic_write, read_csv, write_csv


def test_atomic_write_keeps_the_previous_file_when_the_write_fails_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "split.json"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["split.json"]
    with atomic_write(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["split.json"]


def test_atomic_write_keeps_the_extension_that_writers_choose_their_format_by(tmp_path):
    with atomic_write(tmp_path / "a.npz") as tmp:
        np.savez_compressed(tmp, x=np.arange(3))  # numpy appends ".npz" to a name without it
    with atomic_write(tmp_path / "b.nii.gz") as tmp:
        nib.save(nib.Nifti1Image(np.ones((2, 2), np.float32), np.eye(4)), str(tmp))  # format chosen by extension
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.nii.gz"]
    assert np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2]
    assert nib.load(tmp_path / "b.nii.gz").get_fdata().shape == (2, 2)


def test_write_csv_appends_under_todays_columns(tmp_path):
    path = tmp_path / "rows.csv"
    assert read_csv(path) == []
    write_csv(path, [{"a": 1, "old": 2}], ["a", "old"])
    write_csv(path, [{"a": 3, "b": 4, "extra": 5}], ["a", "b"], append=True)
    assert read_csv(path) == [{"a": "1", "b": ""}, {"a": "3", "b": "4"}]
