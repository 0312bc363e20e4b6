"""ImageNet-100 from a user's ImageNet, by links: the IFM code's 100 classes (CMC's list), train and val
linked not copied, a flat val/ sorted by a labels file, a missing class named."""
import os

import pytest

from featdrop import cli, errors
from featdrop.data import folder, imagenet100


def fake_imagenet(root, val_in_folders=True):
    """ImageNet's layout with two files a class: the 100 classes and two others."""
    wnids = imagenet100.classes() + ["n99999998", "n99999999"]
    for w in wnids:
        (root / "train" / w).mkdir(parents=True)
        for i in range(2):
            (root / "train" / w / f"{w}_{i}.JPEG").write_bytes(b"x")
        if val_in_folders:
            (root / "val" / w).mkdir(parents=True)
            (root / "val" / w / f"ILSVRC2012_val_{w}.JPEG").write_bytes(b"x")
        else:
            (root / "val").mkdir(exist_ok=True)
            (root / "val" / f"ILSVRC2012_val_{w}.JPEG").write_bytes(b"x")
    return wnids


def test_the_class_list_is_the_cmc_subset():
    wnids = imagenet100.classes()
    assert len(wnids) == len(set(wnids)) == 100 and all(w.startswith("n") and len(w) == 9 for w in wnids)
    assert wnids[:3] == ["n02869837", "n01749939", "n02488291"]  # the file's order (CMC's imagenet100.txt)


def test_the_folder_is_built_by_links(tmp_path, capsys):
    fake_imagenet(tmp_path / "in")
    assert cli.main(["imagenet100", "--imagenet", str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    assert "linked 100 classes into" in capsys.readouterr().out
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(imagenet100.classes())
    assert all((out / s / w).is_symlink() for s in ("train", "val") for w in imagenet100.classes())
    target = (tmp_path / "in" / "train" / "n01749939").resolve()
    assert os.readlink(out / "train" / "n01749939") == str(target)
    # the layout dataset=imagefolder reads: train/ and val/ as given, 100 classes
    assert len(folder.listing(out, "train").classes) == 100 and len(folder.listing(out, "test").files) == 100
    # again: the links are there already, nothing changes
    assert imagenet100.build(tmp_path / "in", out)["train"] == 200


def test_a_flat_val_is_sorted_by_its_labels_file(tmp_path):
    wnids = fake_imagenet(tmp_path / "in", val_in_folders=False)
    labels = tmp_path / "LOC_val_solution.csv"
    rows = "".join(f"ILSVRC2012_val_{w},{w} 1 2 3 4\n" for w in wnids)
    labels.write_text("ImageId,PredictionString\n" + rows)
    with pytest.raises(errors.DataNotFoundError, match="val/ is not in class folders; give --val-labels"):
        imagenet100.build(tmp_path / "in", tmp_path / "out")
    counts = imagenet100.build(tmp_path / "in", tmp_path / "out", str(labels))
    assert counts["val"] == 100
    assert (tmp_path / "out" / "val" / wnids[0] / f"ILSVRC2012_val_{wnids[0]}.JPEG").is_symlink()


def test_a_missing_class_is_named(tmp_path):
    fake_imagenet(tmp_path / "in")
    (tmp_path / "in" / "train" / "n01749939" / "n01749939_0.JPEG").unlink()
    (tmp_path / "in" / "train" / "n01749939" / "n01749939_1.JPEG").unlink()
    (tmp_path / "in" / "train" / "n01749939").rmdir()
    with pytest.raises(errors.DataNotFoundError, match="1 of the 100 classes are not in train/: n01749939"):
        imagenet100.build(tmp_path / "in", tmp_path / "out")
