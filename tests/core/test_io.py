from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import roifile
import tifffile
import zarr
from scipy.ndimage import find_objects

from napari_unet.core import io
from napari_unet.core.errors import UserInputError


def make_labels() -> np.ndarray:
    """(40, 50) uint16 labels with three objects, one touching the border, ids 1, 2, 7."""
    labels = np.zeros((40, 50), np.uint16)
    labels[2:10, 3:12] = 1
    labels[20:30, 20:45] = 2
    labels[25:28, 30:33] = 0  # a hole
    labels[35:40, 0:3] = 7
    return labels


def make_stack() -> np.ndarray:
    stack = np.zeros((3, 20, 24), np.uint16)
    stack[0, 2:6, 2:8] = 1
    stack[1, 2:7, 2:9] = 1
    stack[2, 10:15, 12:20] = 5
    return stack


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- export + read back


def test_tif_is_imagej_uint16_and_round_trips(tmp_path: Path) -> None:
    labels = make_labels()
    written = io.export_labels(labels.astype(np.int32), tmp_path / "masks.tif")
    assert written == [tmp_path / "masks.tif"]
    with tifffile.TiffFile(written[0]) as tif:
        assert tif.is_imagej
        assert tif.series[0].axes == "YX"
        data = tif.asarray()
    assert data.dtype == np.uint16
    np.testing.assert_array_equal(data, labels)
    np.testing.assert_array_equal(io.read_labels(written[0]), labels)


def test_tif_stack_records_slices(tmp_path: Path) -> None:
    stack = make_stack()
    io.export_labels(stack, tmp_path / "stack.tiff")
    with tifffile.TiffFile(tmp_path / "stack.tiff") as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["slices"] == 3
        assert tif.series[0].axes == "ZYX"
        np.testing.assert_array_equal(tif.asarray(), stack)


def test_tif_above_uint16_is_uint32_with_axes(tmp_path: Path) -> None:
    labels = make_labels().astype(np.uint32)
    labels[labels == 7] = 70000
    io.export_labels(labels, tmp_path / "big.tif")
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert not tif.is_imagej
        assert tif.series[0].axes == "YX"
        data = tif.asarray()
    assert data.dtype == np.uint32
    np.testing.assert_array_equal(data, labels)


def test_png_is_16_bit_and_round_trips(tmp_path: Path) -> None:
    labels = make_labels()
    labels[labels == 7] = 65535
    io.export_labels(labels, tmp_path / "masks.png")
    back = io.read_labels(tmp_path / "masks.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)


def test_png_refuses_stacks_and_large_ids_without_leaving_files(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="2D"):
        io.export_labels(make_stack(), tmp_path / "stack.png")
    too_many = make_labels().astype(np.uint32)
    too_many[0, 0] = 65536
    with pytest.raises(UserInputError, match="65535"):
        io.export_labels(too_many, tmp_path / "big.png")
    assert listing(tmp_path) == []


def test_npy_round_trip(tmp_path: Path) -> None:
    stack = make_stack()
    io.export_labels(stack, tmp_path / "stack.npy")
    back = np.load(tmp_path / "stack.npy")
    assert back.dtype == stack.dtype
    np.testing.assert_array_equal(back, stack)
    np.testing.assert_array_equal(io.read_labels(tmp_path / "stack.npy"), stack)


def test_fmt_argument_adds_suffix(tmp_path: Path) -> None:
    written = io.export_labels(make_labels(), tmp_path / "masks", fmt="tiff")
    assert written == [tmp_path / "masks.tif"]
    with pytest.raises(UserInputError, match="unknown export format"):
        io.export_labels(make_labels(), tmp_path / "masks", fmt="bmp")
    with pytest.raises(UserInputError, match="cannot tell the export format"):
        io.export_labels(make_labels(), tmp_path / "masks.jpg")


def test_zarr_labels_are_ome_ngff(tmp_path: Path) -> None:
    labels = make_labels()
    io.export_labels(labels, tmp_path / "out.zarr")
    root = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    assert list(root["labels"].attrs["labels"]) == ["nuclei"]
    label_group = root["labels/nuclei"]
    multiscale = label_group.attrs["multiscales"][0]
    assert multiscale["version"] == "0.4"
    assert [axis["name"] for axis in multiscale["axes"]] == ["y", "x"]
    assert [d["path"] for d in multiscale["datasets"]] == ["0"]
    assert "image-label" in label_group.attrs
    array = label_group["0"]
    assert array.dtype == np.uint32
    np.testing.assert_array_equal(array[...], labels)
    np.testing.assert_array_equal(io.read_labels(tmp_path / "out.zarr"), labels)


def test_zarr_with_rgb_image_and_pyramid(tmp_path: Path) -> None:
    labels = np.zeros((6, 2100), np.uint32)
    labels[1:4, 100:2000] = 3
    image = np.random.default_rng(0).integers(0, 255, (6, 2100, 3), dtype=np.uint8)
    io.export_labels(labels, tmp_path / "out.zarr", image=image)
    root = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    image_axes = [axis["name"] for axis in root.attrs["multiscales"][0]["axes"]]
    assert image_axes == ["c", "y", "x"]
    np.testing.assert_array_equal(root["0"][...], np.moveaxis(image, -1, 0))
    datasets = root["labels/nuclei"].attrs["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["0", "1", "2"]  # 2100 -> 1050 -> 525 wide
    assert datasets[2]["coordinateTransformations"][0]["scale"] == [4.0, 4.0]
    np.testing.assert_array_equal(root["labels/nuclei/2"][...], labels[::4, ::4])
    assert root["labels/nuclei"].attrs["image-label"]["source"] == {"image": "../../"}
    np.testing.assert_array_equal(io.read_image(tmp_path / "out.zarr"), np.moveaxis(image, -1, 0))
    np.testing.assert_array_equal(io.read_labels(tmp_path / "out.zarr"), labels)


def test_read_plain_zarr_array(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.float32).reshape(4, 6)
    array = zarr.open_array(str(tmp_path / "plain.zarr"), mode="w", shape=data.shape, dtype=data.dtype)
    array[...] = data
    np.testing.assert_array_equal(io.read_image(tmp_path / "plain.zarr"), data)


def roi_bbox_check(rois: list, labels: np.ndarray) -> None:
    boxes = find_objects(labels)
    for roi in rois:
        label = int(roi.name.split("-")[0])
        rows, cols = boxes[label - 1][-2:]
        xy = roi.coordinates()
        assert len(xy) >= 4
        assert np.all((xy[:, 0] >= cols.start) & (xy[:, 0] <= cols.stop)), roi.name
        assert np.all((xy[:, 1] >= rows.start) & (xy[:, 1] <= rows.stop)), roi.name


def test_roi_zip_one_polygon_per_object(tmp_path: Path) -> None:
    labels = make_labels()
    io.export_labels(labels, tmp_path / "rois.zip")
    rois = roifile.roiread(tmp_path / "rois.zip")
    assert sorted(roi.name for roi in rois) == ["1", "2", "7"]
    assert all(roi.roitype == roifile.ROI_TYPE.POLYGON for roi in rois)
    roi_bbox_check(rois, labels)
    square = next(roi for roi in rois if roi.name == "1").coordinates()
    # the 8 x 9 rectangle's outline reaches its pixel edges (up to the diagonal corner cuts)
    assert square[:, 0].min() == pytest.approx(3, abs=0.5)
    assert square[:, 0].max() == pytest.approx(12, abs=0.5)


def test_roi_zip_stack_sets_positions(tmp_path: Path) -> None:
    stack = make_stack()
    io.export_labels(stack, tmp_path / "rois.zip")
    rois = roifile.roiread(tmp_path / "rois.zip")
    assert sorted((roi.name, roi.position) for roi in rois) == [("1-z1", 1), ("1-z2", 2), ("5-z3", 3)]
    for roi in rois:
        plane = stack[roi.position - 1]
        roi_bbox_check([roi], plane)


def test_csv_measurements(tmp_path: Path) -> None:
    labels = make_labels()
    io.export_labels(labels, tmp_path / "objects.csv")
    with open(tmp_path / "objects.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["label"]) for row in rows] == [1, 2, 7]
    counts = np.bincount(labels.ravel())
    assert [int(row["area"]) for row in rows] == [counts[1], counts[2], counts[7]]
    first = rows[0]
    assert float(first["centroid_y"]) == pytest.approx(5.5)
    assert float(first["centroid_x"]) == pytest.approx(7.0)
    assert (int(first["bbox_min_y"]), int(first["bbox_max_x"])) == (2, 12)
    assert float(first["equivalent_diameter"]) == pytest.approx(np.sqrt(4 * 72 / np.pi))
    assert float(rows[1]["solidity"]) < 1.0  # the hole


def test_measure_intensity_grey_and_rgb() -> None:
    labels = make_labels()
    grey = np.arange(labels.size, dtype=np.float32).reshape(labels.shape)
    table = io.measure_objects(labels, grey)
    for index, label in enumerate(table["label"]):
        values = grey[labels == label]
        assert table["mean_intensity"][index] == pytest.approx(values.mean())
        assert table["max_intensity"][index] == values.max()
        assert table["min_intensity"][index] == values.min()
    rgb = np.stack([grey, 2 * grey, np.zeros_like(grey)], axis=-1)
    table = io.measure_objects(labels, rgb)
    assert table["mean_intensity_c1"][0] == pytest.approx(2 * grey[labels == 1].mean())
    channels_first = io.measure_objects(labels, np.moveaxis(rgb, -1, 0))
    np.testing.assert_allclose(channels_first["mean_intensity_c1"], table["mean_intensity_c1"])
    with pytest.raises(UserInputError, match="does not match"):
        io.measure_objects(labels, grey[:10])


def test_measure_empty_and_3d() -> None:
    empty = io.measure_objects(np.zeros((8, 8), np.uint8))
    assert empty["label"].size == 0 and "area" in empty
    table = io.measure_objects(make_stack())
    assert list(table["label"]) == [1, 5]
    assert list(table["volume"]) == [24 + 35, 40] and "area" not in table  # voxels
    assert "centroid_z" in table and "eccentricity" not in table


def test_write_csv_rejects_ragged(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="different lengths"):
        io.write_csv({"a": [1, 2], "b": [1]}, tmp_path / "t.csv")
    assert listing(tmp_path) == []


# ----------------------------------------------------------------------------- overwrite, atomicity, errors


@pytest.mark.parametrize("name", ["m.tif", "m.png", "m.npy", "m.zip", "m.csv"])
def test_overwrite_refused_keeps_original_bytes(tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    target.write_bytes(b"original")
    with pytest.raises(UserInputError, match="exists; pass overwrite=True"):
        io.export_labels(make_labels(), target)
    assert target.read_bytes() == b"original"
    assert listing(tmp_path) == [name]
    io.export_labels(make_labels(), target, overwrite=True)
    assert target.read_bytes() != b"original"
    assert listing(tmp_path) == [name]


def test_zarr_overwrite_refused_then_replaced(tmp_path: Path) -> None:
    io.export_labels(make_labels(), tmp_path / "out.zarr")
    with pytest.raises(UserInputError, match="exists"):
        io.export_labels(make_stack(), tmp_path / "out.zarr")
    np.testing.assert_array_equal(io.read_labels(tmp_path / "out.zarr"), make_labels())
    io.export_labels(make_stack(), tmp_path / "out.zarr", overwrite=True)
    np.testing.assert_array_equal(io.read_labels(tmp_path / "out.zarr"), make_stack())
    assert listing(tmp_path) == ["out.zarr"]


def test_failing_writer_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), io.atomic_write_path(tmp_path / "x.tif") as temp:
        assert temp.name == "x.tif" and temp.parent.parent == tmp_path
        temp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert listing(tmp_path) == []
    with pytest.raises(RuntimeError, match="boom"), io.atomic_write_dir(tmp_path / "s.zarr") as temp:
        (temp / "chunk").write_bytes(b"partial")
        raise RuntimeError("boom")
    assert listing(tmp_path) == []


def test_failing_writer_keeps_existing_target(tmp_path: Path) -> None:
    target = tmp_path / "x.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), io.atomic_write_path(target, overwrite=True) as temp:
        temp.write_text("new")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    folder = tmp_path / "store.zarr"
    folder.mkdir()
    (folder / "keep").write_text("old")
    ours = lambda path: True  # noqa: E731 - the folder counts as napari-unet's for this test
    with pytest.raises(RuntimeError), io.atomic_write_dir(folder, overwrite=True, replaceable=ours) as temp:
        (temp / "new").write_text("new")
        raise RuntimeError("boom")
    assert listing(folder) == ["keep"]
    assert listing(tmp_path) == ["store.zarr", "x.csv"]


def tree_digest(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def foreign_folder(path: Path) -> Path:
    """A folder napari-unet did not write: a thesis and a data file in a sub-folder."""
    (path / "sub").mkdir(parents=True)
    (path / "thesis.docx").write_bytes(b"chapter 1")
    (path / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return path


def test_overwrite_refuses_a_folder_napari_unet_did_not_write(tmp_path: Path) -> None:
    folder = foreign_folder(tmp_path / "results.zarr")
    before = tree_digest(folder)
    with pytest.raises(UserInputError, match=r"napari-unet did not write .*sub, thesis\.docx"):
        io.export_labels(make_labels(), folder, overwrite=True)
    with pytest.raises(UserInputError, match="did not write"), io.atomic_write_dir(folder, overwrite=True):
        pass
    assert tree_digest(folder) == before
    assert listing(tmp_path) == ["results.zarr"], "no temporary folder is left behind"


def test_a_store_napari_unet_wrote_is_recognised_and_replaced(tmp_path: Path) -> None:
    io.export_labels(make_labels(), tmp_path / "out.zarr")
    assert io.is_own_zarr(tmp_path / "out.zarr")
    assert not io.is_own_zarr(foreign_folder(tmp_path / "other.zarr"))
    io.export_labels(make_stack(), tmp_path / "out.zarr", overwrite=True)
    np.testing.assert_array_equal(io.read_labels(tmp_path / "out.zarr"), make_stack())


def test_writer_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no output"), io.atomic_write_path(tmp_path / "x.npy"):
        pass
    assert listing(tmp_path) == []


def test_missing_or_file_parent_is_a_user_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "masks.tif"
    with pytest.raises(UserInputError, match=r"folder .*nope does not exist"):
        io.export_labels(make_labels(), missing)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(UserInputError, match="is a file, not a folder"):
        io.export_labels(make_labels(), blocker / "masks.tif")
    (tmp_path / "folder.tif").mkdir()
    with pytest.raises(UserInputError, match="is a folder; choose a file name"):
        io.export_labels(make_labels(), tmp_path / "folder.tif", overwrite=True)


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="no such file"):
        io.read_image(tmp_path / "missing.tif")
    (tmp_path / "notes.docx").write_bytes(b"x")
    with pytest.raises(UserInputError, match="unsupported file type"):
        io.read_image(tmp_path / "notes.docx")
    for name in ("bad.tif", "bad.png", "bad.npy"):
        (tmp_path / name).write_bytes(np.random.default_rng(1).bytes(300))
        with pytest.raises(UserInputError, match=r"could not read .*corrupt"):
            io.read_image(tmp_path / name)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserInputError, match=r"objects\.npy"):
        io.read_image(tmp_path / "objects.npy")


def test_read_labels_checks_integers(tmp_path: Path) -> None:
    np.save(tmp_path / "frac.npy", np.array([[0.0, 1.5]]))
    with pytest.raises(UserInputError, match="whole numbers"):
        io.read_labels(tmp_path / "frac.npy")
    np.save(tmp_path / "neg.npy", np.array([[0, -1]], np.int16))
    with pytest.raises(UserInputError, match=">= 0"):
        io.read_labels(tmp_path / "neg.npy")
    np.save(tmp_path / "whole.npy", np.array([[0.0, 3.0]], np.float32))
    back = io.read_labels(tmp_path / "whole.npy")
    assert back.dtype == np.uint32 and back.tolist() == [[0, 3]]


def test_read_rgb_png_and_jpeg(tmp_path: Path) -> None:
    import imagecodecs

    rgb = np.random.default_rng(2).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(imagecodecs.png_encode(rgb))
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.png"), rgb)
    (tmp_path / "b.jpg").write_bytes(imagecodecs.jpeg8_encode(rgb, level=95))
    assert io.read_image(tmp_path / "b.jpg").shape == (12, 10, 3)


def test_list_images(tmp_path: Path) -> None:
    for name in ("b_image.tif", "a_image.png", "c_labels.tif", ".hidden.tif", "notes.txt", "d.npy"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "e.zarr").mkdir()
    names = [p.name for p in io.list_images(tmp_path)]
    assert names == ["a_image.png", "b_image.tif", "c_labels.tif", "d.npy", "e.zarr"]
    assert [p.name for p in io.list_images(tmp_path, "*_image.*")] == ["a_image.png", "b_image.tif"]
    with pytest.raises(UserInputError, match="not an existing folder"):
        io.list_images(tmp_path / "missing")


# ----------------------------------------------------------------------------- provenance


def test_provenance_record_and_export(tmp_path: Path) -> None:
    from napari_unet.core.config import ModelConfig, PostprocessConfig
    from napari_unet.core.models.bundle import ModelBundle

    source = tmp_path / "input.tif"
    tifffile.imwrite(source, np.ones((4, 4), np.uint8))
    array = np.arange(6, dtype=np.uint16).reshape(2, 3)
    bundle = ModelBundle.new(ModelConfig(depth=1, base_channels=2), metadata={"name": "tiny", "version": 2}, seed=0)
    record = io.provenance(
        model=bundle,
        settings={"postprocess": PostprocessConfig(min_size=3), "tile": (64, 64), "thr": np.float32(0.5)},
        inputs=[source, array],
        method="unet",
    )
    assert record["model"]["name"] == "tiny" and record["model"]["version"] == 2
    assert record["model"]["sha256"] == bundle.sha256
    assert record["inputs"][0]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["inputs"][1]["sha256"] == hashlib.sha256(array.tobytes()).hexdigest()
    assert record["inputs"][1]["shape"] == [2, 3]
    assert record["settings"]["postprocess"]["min_size"] == 3
    assert record["settings"]["tile"] == [64, 64]
    assert set(io.PROVENANCE_PACKAGES) <= set(record["packages"])
    assert record["packages"]["numpy"] == np.__version__

    written = io.export_labels(make_labels(), tmp_path / "masks.tif", provenance=record)
    assert written == [tmp_path / "masks.tif", tmp_path / "masks.tif.provenance.json"]
    saved = json.loads(written[1].read_text())
    assert saved["output"]["objects"] == 3 and saved["output"]["format"] == "tif"
    assert saved["inputs"] == record["inputs"]
    assert "output" not in record  # the caller's dict is not modified


def test_existing_provenance_blocks_the_whole_export(tmp_path: Path) -> None:
    (tmp_path / "masks.npy.provenance.json").write_text("{}")
    with pytest.raises(UserInputError, match=r"provenance\.json exists"):
        io.export_labels(make_labels(), tmp_path / "masks.npy", provenance={"method": "manual"})
    assert listing(tmp_path) == ["masks.npy.provenance.json"]


def test_write_provenance_refuses_overwrite(tmp_path: Path) -> None:
    path = io.write_provenance(tmp_path / "p.json", {"a": 1})
    with pytest.raises(UserInputError, match="exists"):
        io.write_provenance(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    io.write_provenance(path, {"a": 2}, overwrite=True)
    assert json.loads(path.read_text()) == {"a": 2}


SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "dsb2018" / "val"


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
def test_real_labels_round_trip_through_every_format(tmp_path: Path) -> None:
    label_file = sorted(SHARED.glob("*_labels.tif"))[0]
    labels = io.read_labels(label_file)
    image = io.read_image(label_file.with_name(label_file.name.replace("_labels", "_image")))
    for name in ("m.tif", "m.png", "m.npy", "m.zarr"):
        io.export_labels(labels, tmp_path / name, image=image)
        np.testing.assert_array_equal(io.read_labels(tmp_path / name), labels)
    io.export_labels(labels, tmp_path / "m.csv", image=image)
    with open(tmp_path / "m.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(np.unique(labels)) - 1
    io.export_labels(labels, tmp_path / "m.zip")
    assert len(roifile.roiread(tmp_path / "m.zip")) == len(np.unique(labels)) - 1


def test_provenance_model_given_as_name_or_dict() -> None:
    assert io.provenance(model="nuclei@v2")["model"] == {"name": "nuclei@v2"}
    assert io.provenance(model={"name": "x", "sha256": "ab"})["model"] == {"name": "x", "sha256": "ab"}
    assert io.provenance(method="otsu")["model"] is None


def test_published_files_and_folders_get_normal_permissions(tmp_path):
    import os
    import stat

    from napari_unet.core.io import export_labels

    labels = np.zeros((8, 8), np.uint16)
    labels[2:5, 2:5] = 1
    umask = os.umask(0o022)
    try:
        tif = export_labels(labels, tmp_path / "m.tif")[0]
        zarr_store = export_labels(labels, tmp_path / "m.zarr")[0]
    finally:
        os.umask(umask)
    assert stat.S_IMODE(tif.stat().st_mode) == 0o644
    assert stat.S_IMODE(zarr_store.stat().st_mode) == 0o755
    assert all(stat.S_IMODE(p.stat().st_mode) in (0o644, 0o755) for p in zarr_store.rglob("*"))


def test_annotated_folder_pairs_images_with_their_labels_in_name_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    written = {}
    for image_id in ("b2", "a1", "c3"):
        image, labels = rng.integers(0, 255, (8, 10), dtype=np.uint8), rng.integers(0, 4, (8, 10), dtype=np.uint16)
        tifffile.imwrite(tmp_path / f"{image_id}_image.tif", image)
        if image_id != "c3":  # an image nobody annotated is skipped
            tifffile.imwrite(tmp_path / f"{image_id}_labels.tif", labels)
        written[image_id] = (image, labels)
    pairs = io.read_annotated_folder(tmp_path)
    assert [name for name, _, _ in pairs] == ["a1", "b2"]
    for name, image, labels in pairs:
        np.testing.assert_array_equal(image, written[name][0])
        np.testing.assert_array_equal(labels, written[name][1])
    assert [name for name, _, _ in io.read_annotated_folder(tmp_path, limit=1)] == ["a1"]
    assert io.read_annotated_folder(tmp_path, limit=0) == []
    assert io.read_annotated_folder(tmp_path / "nothing-here") == []
