"""python -m freeze_embed.tools.predict --images: one CSV row per image, checked against an independent forward pass."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

from model_files import CLASSES, checkpoint, preprocess

from freeze_embed.errors import run_command
from freeze_embed.tools.export import main as export
from freeze_embed.tools.predict import main as predict

SIZES = [(40, 50), (64, 48), (33, 33), (50, 70)]


def photo(path: Path, seed: int, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    w, h = SIZES[seed % len(SIZES)]
    pixels = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def photo_tree(root: Path) -> list[tuple[Path, str]]:
    """A class-per-folder tree (a nested folder, a JPEG, a hidden file to skip); [(path, class)] in listing order."""
    files = [photo(root / "cat/a.png", 0), photo(root / "cat/more/b.jpg", 1, "JPEG"), photo(root / "dog/c.png", 2),
             photo(root / "dog/d.png", 3), photo(root / "fox/e.png", 4), photo(root / "fox/f.png", 5)]
    photo(root / "fox/.hidden.png", 6)
    return sorted(((p, p.relative_to(root).parts[0]) for p in files), key=lambda pc: (pc[1], str(pc[0])))


def reference(model, paths: list[Path], size: int = 32) -> torch.Tensor:
    """Softmax probabilities through timm's own transform and the FineTuner (one batch: the head's large weights
    would turn a batch-size-dependent rounding of the features into 1e-5 in the probabilities)."""
    transform = timm.data.create_transform(**preprocess(size))
    with torch.no_grad():
        return model(torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])).softmax(-1)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def model_for(tmp_path: Path, paths: list[Path]):
    """A checkpoint whose head spreads these images over the classes (see model_files.checkpoint)."""
    transform = timm.data.create_transform(**preprocess(32))
    images = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    return checkpoint(tmp_path / "m.ckpt", centre=images)


def test_folder_tree_matches_an_independent_forward_pass(tmp_path, capsys):
    tree = photo_tree(tmp_path / "photos")
    broken = tmp_path / "photos/dog/broken.jpg"
    broken.write_bytes(b"not a JPEG")
    model = model_for(tmp_path, [p for p, _ in tree])
    predict(["--ckpt_path", str(tmp_path / "m.ckpt"), "--images", str(tmp_path / "photos"),
             "--out", str(tmp_path / "preds.csv"), "--topk", "2", "--num_workers", "2"])

    rows = read_csv(tmp_path / "preds.csv")
    assert list(rows[0]) == ["path", "label", "pred", "prob", "pred_2", "prob_2", "error"]
    expected = sorted(tree + [(broken, "dog")], key=lambda pc: (pc[1], str(pc[0])))
    assert [(Path(r["path"]), r["label"]) for r in rows] == expected
    [bad] = [r for r in rows if r["error"]]
    assert Path(bad["path"]) == broken and bad["error"].startswith("UnidentifiedImageError: ")
    assert bad["pred"] == bad["prob"] == ""
    good = [r for r in rows if not r["error"]]
    probs = reference(model, [p for p, _ in tree])
    top_p, top_i = probs.topk(2, dim=-1)
    assert [(r["pred"], r["pred_2"]) for r in good] == [(CLASSES[i], CLASSES[j]) for i, j in top_i.tolist()]
    got = torch.tensor([[float(r["prob"]), float(r["prob_2"])] for r in good])
    torch.testing.assert_close(got, top_p, rtol=0, atol=1e-5)
    assert len({r["pred"] for r in good}) > 1  # predictions differ, so a shuffled CSV would not pass
    correct = sum(CLASSES[i] == label for i, (_, label) in zip(top_i[:, 0].tolist(), tree))
    out = capsys.readouterr().out
    assert f"Accuracy: {correct / 6:.4f} ({correct} of 6 labelled images)." in out
    assert "1 of 7 images could not be read; their rows' error column says why." in out


def test_manifest_files_and_an_export(tmp_path, capsys):
    tree = photo_tree(tmp_path / "photos")
    model_for(tmp_path, [p for p, _ in tree])
    manifest = tmp_path / "photos/list.csv"
    manifest.write_text("path,label\n" + "".join(f"{p.relative_to(manifest.parent)},{c}\n" for p, c in tree[::-1]))
    args = ["--images", str(manifest), "--out", str(tmp_path / "m.csv"), "--num_workers", "0"]
    predict(["--ckpt_path", str(tmp_path / "m.ckpt"), *args])
    from_manifest = read_csv(tmp_path / "m.csv")
    assert [(Path(r["path"]), r["label"]) for r in from_manifest] == tree[::-1]  # the manifest's order
    assert "Accuracy: " in capsys.readouterr().out

    files = [str(p) for p, _ in tree[:2]]
    predict(["--ckpt_path", str(tmp_path / "m.ckpt"), "--images", *files, "--out", str(tmp_path / "f.csv"),
             "--num_workers", "0"])
    from_files = read_csv(tmp_path / "f.csv")
    assert list(from_files[0]) == ["path", "pred", "prob", "error"]  # no labels: no label column, no accuracy
    assert "Accuracy" not in capsys.readouterr().out
    assert [r["pred"] for r in from_files] == [r["pred"] for r in from_manifest[::-1][:2]]

    export(["--ckpt_path", str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "exported")])
    predict(["--model", str(tmp_path / "exported"), *args[:-3], str(tmp_path / "e.csv"), "--num_workers", "0"])
    from_export = read_csv(tmp_path / "e.csv")
    assert [r["pred"] for r in from_export] == [r["pred"] for r in from_manifest]
    torch.testing.assert_close(torch.tensor([float(r["prob"]) for r in from_export]),
                               torch.tensor([float(r["prob"]) for r in from_manifest]), rtol=0, atol=2e-6)


def test_folders_that_are_not_classes_are_just_images(tmp_path, capsys):
    photo(tmp_path / "photos/2024/a.png", 0)
    photo(tmp_path / "photos/2025/b.png", 1)
    checkpoint(tmp_path / "m.ckpt")
    predict(["--ckpt_path", str(tmp_path / "m.ckpt"), "--images", str(tmp_path / "photos"),
             "--out", str(tmp_path / "p.csv"), "--num_workers", "0"])
    rows = read_csv(tmp_path / "p.csv")
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.png"] and "label" not in rows[0]
    assert "Not computing accuracy: the folders ['2024', '2025'] are not classes of this model." in \
        capsys.readouterr().out


def one_error(capsys, args: list[str]) -> str:
    status = run_command(predict, args)  # what python -m does with the error main raises
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err, err
    [line] = [line for line in err.splitlines() if line.startswith("error: ")]
    return line


def test_user_errors_are_one_sentence(tmp_path, capsys):
    (tmp_path / "empty/sub").mkdir(parents=True)
    (tmp_path / "empty/sub/notes.txt").write_text("no image here")
    (tmp_path / "x.ckpt").write_bytes(b"")  # never read: the images are checked first
    msg = one_error(capsys, ["--ckpt_path", str(tmp_path / "x.ckpt"), "--images", str(tmp_path / "empty"),
                             "--out", str(tmp_path / "p.csv")])
    assert msg == (f"error: There is no image in {tmp_path / 'empty'}: give a folder with image files (searched "
                   "recursively), a CSV manifest with a path column, or image files.")

    photo(tmp_path / "a.png", 0)
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    msg = one_error(capsys, ["--ckpt_path", str(tmp_path / "other.ckpt"), "--images", str(tmp_path / "a.png"),
                             "--out", str(tmp_path / "p.csv")])
    assert msg.startswith(f"error: '{tmp_path / 'other.ckpt'}' is not a freeze-embed checkpoint")

    checkpoint(tmp_path / "m.ckpt")
    (tmp_path / "list.csv").write_text("path,label\na.png,wolf\n")
    msg = one_error(capsys, ["--ckpt_path", str(tmp_path / "m.ckpt"), "--images", str(tmp_path / "list.csv"),
                             "--out", str(tmp_path / "p.csv")])
    assert msg == ("error: The labels ['wolf'] are not classes of this model (cat, dog, fox): fix the CSV's label "
                   "column.")
    msg = one_error(capsys, ["--model", str(tmp_path), "--images", str(tmp_path / "a.png"),
                             "--out", str(tmp_path / "p.csv")])
    assert msg == (f"error: '{tmp_path}' is not an export folder (it needs config.json and model.safetensors): give "
                   "the --out folder of python -m freeze_embed.tools.export.")
    assert not (tmp_path / "p.csv").exists()


def demo_tree(root: Path, n: int, agreement: float, seed: int) -> list[tuple[Path, int]]:
    """The demo's images (a grating whose angle is the class, a tint that agrees with it ``agreement`` of the time)
    as PNG files in a class-per-folder tree; [(path, label)]."""
    from freeze_embed.data.demo import make_shift_images
    images, labels, _ = make_shift_images(n, 4, agreement=agreement, seed=seed)
    files = []
    for i, (image, label) in enumerate(zip(images, labels.tolist())):
        files.append((root / f"angle{45 * label:03d}" / f"{i:02d}.png", label))
        files[-1][0].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()).save(files[-1][0])
    return files


@pytest.mark.slow
def test_fit_on_folders_then_predict_and_export(tmp_path, capsys):
    """train.py fit on a folder tree (the demo ViT, freeze-embed, one epoch, an OOD folder), then predict and export
    through the CLIs: predict's accuracy on the OOD folder is the one training measured with the same checkpoint."""
    from helpers import ROOT, run_cli

    from freeze_embed.module import FineTuner
    demo_tree(tmp_path / "train", 48, 0.9, seed=1)
    ood = demo_tree(tmp_path / "ood", 16, 0.25, seed=2)
    run_cli(["fit", "--config", str(ROOT / "configs/demo.yaml"),
             "--config", str(ROOT / "configs/data/image_folders.yaml"),
             "--data.init_args.train", str(tmp_path / "train"), "--data.init_args.id_val", "null",
             "--data.init_args.eval", f"{{ood_test: {tmp_path / 'ood'}}}", "--data.init_args.num_workers", "0",
             "--data.init_args.batch_size", "16", "--trainer.max_epochs", "1",
             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
             "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
             "--trainer.default_root_dir", str(tmp_path), "--run_dir", str(tmp_path / "run")])
    ckpt = tmp_path / "run/checkpoints/last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    names = saved["class_names"]
    assert names == ["angle000", "angle045", "angle090", "angle135"]
    predict(["--ckpt_path", str(ckpt), "--images", str(tmp_path / "ood"), "--out", str(tmp_path / "p.csv"),
             "--num_workers", "0"])
    rows = read_csv(tmp_path / "p.csv")
    order = sorted(ood, key=lambda pl: (pl[1], str(pl[0])))
    assert [(Path(r["path"]), r["label"]) for r in rows] == [(p, names[y]) for p, y in order]

    model = FineTuner.load_from_checkpoint(ckpt, map_location="cpu").eval()  # Lightning's own loading
    transform = timm.data.create_transform(**saved["preprocess"])
    with torch.no_grad():
        probs = model(torch.stack([transform(Image.open(p).convert("RGB")) for p, _ in order])).softmax(-1)
    assert [r["pred"] for r in rows] == [names[i] for i in probs.argmax(-1).tolist()]
    torch.testing.assert_close(torch.tensor([float(r["prob"]) for r in rows]), probs.max(-1).values,
                               rtol=0, atol=1e-5)
    correct = sum(r["pred"] == r["label"] for r in rows)
    assert f"Accuracy: {correct / 16:.4f} ({correct} of 16 labelled images)." in capsys.readouterr().out
    trained = json.loads((tmp_path / "run/results.json").read_text())
    assert correct / 16 == pytest.approx(trained["last"]["last/ood_test/acc"])

    export(["--ckpt_path", str(ckpt), "--out", str(tmp_path / "exported")])
    predict(["--model", str(tmp_path / "exported"), "--images", str(tmp_path / "ood"),
             "--out", str(tmp_path / "e.csv"), "--num_workers", "0"])
    assert [r["pred"] for r in read_csv(tmp_path / "e.csv")] == [r["pred"] for r in rows]
