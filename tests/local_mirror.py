"""A local dataset host for the download tests: a Range-aware HTTP server on 127.0.0.1 (the
``server`` fixture in conftest.py runs it) and small archives with the real layouts of three
datasets, served at the real URLs' paths with the registry's own entries.  TASK_LAYOUTS adds the retrieval
and VQA datasets: a caption_datasets.zip holding Karpathy JSON files, VQAv2 question and
annotation zips, and COCO-style image zips, all in the real file and key layouts.
:func:`dg_layouts` adds the four domain-generalization targets (ImageNet-V2, -Sketch, -A, -R):
every class folder of the real archives, one tiny image each (a few with more), and a
stand-in for CoOp's classnames.txt naming ImageNet's 1,000 wnids."""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import re
import tarfile
import zipfile
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from PIL import Image

from dicap.data.paper_sources import load_registry

# --- a tiny mirror --------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """GET with ``Range: bytes=N-`` support; the server object carries files and switches."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        body = srv.files.get(self.path)
        rng = self.headers.get("Range")
        if self.path in srv.fail_once:
            status = srv.fail_once.pop(self.path)
            srv.requests.append((self.path, rng, status))
            self.send_error(status)
            return
        if body is None:
            srv.requests.append((self.path, rng, 404))
            self.send_error(404)
            return
        status, start = 200, 0
        if rng and not srv.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                srv.requests.append((self.path, rng, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        srv.requests.append((self.path, rng, status))
        chunk = body[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Type", srv.content_types.get(self.path, "application/octet-stream"))
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        cut = srv.truncate_once.pop(self.path, None)
        self.wfile.write(chunk if cut is None else chunk[:cut])  # HTTP/1.0: the connection closes after

    def log_message(self, *args: object) -> None:
        pass


def serve(srv, url: str, body: bytes) -> str:
    """Serve ``body`` at the path (and query) of the real ``url``; return the local URL."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    srv.files[path] = body
    return srv.base + path


# --- archives with the real layouts ---------------------------------------------------------


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (seed * 40 % 256, 80, 160)).save(buf, "JPEG")
    return buf.getvalue()


def tar_bytes(entries: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


SPLIT = b'{"train": [], "val": [], "test": []}\n'

# Per dataset: the bytes of each registry file, and the paths the real layout must show.
LAYOUTS = {
    "oxford_pets": (
        {"images.tar.gz": tar_bytes({"images/Abyssinian_1.jpg": jpeg(1), "images/beagle_2.jpg": jpeg(2)}),
         "annotations.tar.gz": tar_bytes({"annotations/list.txt": b"Abyssinian_1 1 1 1\n",
                                          "annotations/trainval.txt": b"Abyssinian_1 1 1 1\n"}),
         "split_zhou_OxfordPets.json": SPLIT},
        ["images/Abyssinian_1.jpg", "images/beagle_2.jpg", "annotations/list.txt"],
    ),
    "dtd": (
        {"dtd-r1.0.1.tar.gz": tar_bytes({"dtd/images/banded/banded_0002.jpg": jpeg(3),
                                         "dtd/images/zigzagged/zigzagged_0003.jpg": jpeg(4),
                                         "dtd/labels/train1.txt": b"banded/banded_0002.jpg\n"}),
         "split_zhou_DescribableTextures.json": SPLIT},
        ["dtd/images/banded/banded_0002.jpg", "dtd/images/zigzagged/zigzagged_0003.jpg", "dtd/labels/train1.txt"],
    ),
    "eurosat": (
        {"EuroSAT.zip": zip_bytes({"2750/AnnualCrop/AnnualCrop_1.jpg": jpeg(5),
                                   "2750/SeaLake/SeaLake_7.jpg": jpeg(6)}),
         "split_zhou_EuroSAT.json": SPLIT},
        ["2750/AnnualCrop/AnnualCrop_1.jpg", "2750/SeaLake/SeaLake_7.jpg"],
    ),
}


def local_registry(srv, keys, overrides: dict[str, bytes] | None = None) -> dict:
    """The real registry's entries for ``keys``, served locally, checksums of the test bytes.

    Published checksums become those of the small archives (same algorithm; cross-checks
    recomputed); files whose registry checksum is null stay null, as in the real thing."""
    real = load_registry()
    reg = {"version": 1, "datasets": {}}
    for key in keys:
        entry = copy.deepcopy(real["datasets"][key])
        blobs = {**{**LAYOUTS, **TASK_LAYOUTS, **dg_layouts()}[key][0], **(overrides or {})}
        for f in entry["files"]:
            data = blobs[f["filename"]]
            serve(srv, f["url"], data)
            if f["checksum"] is not None:
                f["checksum"] = hashlib.new(f["algorithm"], data).hexdigest()
                for c in f.get("cross_checks", []):
                    c["checksum"] = hashlib.new(c["algorithm"], data).hexdigest()
        reg["datasets"][key] = entry
    return reg


# --- domain generalization: ImageNet-V2, -Sketch, -A, -R (test-only, ImageNet's classes) ---------


def imagenet_classnames() -> bytes:
    """A stand-in for CoOp's classnames.txt: ``<wnid> <name>`` for ImageNet's 1,000 wnids in index order."""
    from dicap.data.imagenet_variants import wnids

    return "".join(f"{wnid} thing {i}\n" for i, wnid in enumerate(wnids("imagenet"))).encode()


# Per target: the archive's name, its image root, the label map, how folders name a class, and
# a real-looking file name (V2's are hashes, A's carry spaces).
DG_TARGETS = {
    "imagenet_v2": ("imagenetv2-matched-frequency.tar.gz", "imagenetv2-matched-frequency-format-val", "imagenet", "index",
                    "{i:x}f3a9c0d2b.jpeg"),
    "imagenet_sketch": ("ImageNet-Sketch.zip", "sketch", "imagenet", "wnid", "sketch_{i}.JPEG"),
    "imagenet_a": ("imagenet-a.tar", "imagenet-a", "imagenet_a", "wnid", "0.00{i}_digital clock _ wall clock_0.86.jpg"),
    "imagenet_r": ("imagenet-r.tar", "imagenet-r", "imagenet_r", "wnid", "art_{i}.jpg"),
}
DG_EXTRA = 2  # the first class of each target has this many more images


def dg_members(key: str) -> dict[str, bytes]:
    """The archive members of one target in its real layout: every class folder with one image
    (the first class with 1 + DG_EXTRA), and A's and R's README.txt beside the folders."""
    from dicap.data.imagenet_variants import wnids

    _, root, classes, folders, name = DG_TARGETS[key]
    index = {wnid: i for i, wnid in enumerate(wnids("imagenet"))}
    images, members = [jpeg(k) for k in range(6 + DG_EXTRA)], {}
    for n, wnid in enumerate(wnids(classes)):
        folder = str(index[wnid]) if folders == "index" else wnid
        for i in range(1 + (DG_EXTRA if n == 0 else 0)):
            members[f"{root}/{folder}/{name.format(i=i)}"] = images[n % 6 + i]
    if key in ("imagenet_a", "imagenet_r"):
        members[f"{root}/README.txt"] = b"The 200 ImageNet classes of this dataset.\n"
    return members


@functools.cache
def dg_layouts() -> dict[str, tuple[dict[str, bytes], list[str]]]:
    """LAYOUTS' shape for the four targets: the bytes of each registry file, and paths the real
    layout must show.  Built on first use (a few thousand archive members), not on import."""
    out = {}
    for key, (archive, _, _, _, _) in DG_TARGETS.items():
        members = dg_members(key)
        data = zip_bytes(members) if archive.endswith(".zip") else tar_bytes(members, "w:gz" if archive.endswith(".gz") else "w")
        out[key] = ({archive: data, "classnames.txt": imagenet_classnames()}, sorted(members)[:2])
    return out


# --- retrieval and VQA: Karpathy JSON, VQAv2 JSON, COCO image zips ----------------------------


def karpathy_image(imgid: int, split: str, filename: str, n_captions: int = 5, filepath: str | None = None) -> dict:
    """One ``images`` entry of a Karpathy split file, with every key the real files carry."""
    entry = {"filename": filename, "imgid": imgid, "split": split,
             "sentids": list(range(imgid * 10, imgid * 10 + n_captions)),
             "sentences": [{"tokens": ["image", str(imgid), "caption", str(j)], "raw": f"Image {imgid} caption {j}.",
                            "imgid": imgid, "sentid": imgid * 10 + j} for j in range(n_captions)]}
    if filepath is not None:  # COCO only, as in dataset_coco.json
        entry = {"filepath": filepath, **entry, "cocoid": imgid}
    return entry


def karpathy_json(dataset: str, images: list[dict]) -> bytes:
    return json.dumps({"images": images, "dataset": dataset}).encode()


def flickr_images(n_train: int = 200, n_val: int = 3, n_test: int = 4) -> list[dict]:
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    return [karpathy_image(i, s, f"{1000000 + i}.jpg") for i, s in enumerate(splits)]


def coco_images(n_train: int = 120, n_restval: int = 5, n_val: int = 3, n_test: int = 4) -> list[dict]:
    out = []
    for i, s in enumerate(["train"] * n_train + ["restval"] * n_restval + ["val"] * n_val + ["test"] * n_test):
        sub = "train2014" if s == "train" else "val2014"  # Karpathy's val/test/restval come from COCO val2014
        out.append(karpathy_image(i, s, f"COCO_{sub}_{i:012d}.jpg", 5 + (i % 3 == 0), filepath=sub))
    return out


def vqa_files(n_images: int = 300, per_image: int = 4, subtype: str = "val2014") -> tuple[bytes, bytes]:
    """(questions JSON, annotations JSON) in VQAv2's layout; question_id = image_id * 1000 + k."""
    questions, annotations = [], []
    for image_id in range(1, n_images + 1):
        for k in range(per_image):
            qid = image_id * 1000 + k
            questions.append({"image_id": image_id, "question": f"What color is thing {k}?", "question_id": qid})
            answers = ["red"] * 7 + ["blue"] * 3
            annotations.append({"question_type": "what color is the", "multiple_choice_answer": "red",
                                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                                            for j, a in enumerate(answers)],
                                "image_id": image_id, "answer_type": "other", "question_id": qid})
    info = {"description": "a small stand-in in the VQAv2 layout", "version": "2.0"}
    q = {"info": info, "task_type": "Open-Ended", "data_type": "mscoco", "license": {}, "data_subtype": subtype,
         "questions": questions}
    a = {"info": info, "license": {}, "data_subtype": subtype, "annotations": annotations}
    return json.dumps(q).encode(), json.dumps(a).encode()


_FLICKR, _COCO = flickr_images(), coco_images()
CAPTIONS_ZIP = zip_bytes({"dataset_flickr30k.json": karpathy_json("flickr30k", _FLICKR),
                          "dataset_coco.json": karpathy_json("coco", _COCO),
                          "dataset_flickr8k.json": karpathy_json("flickr8k", _FLICKR[:10])})
_VQA_Q, _VQA_A = vqa_files()
# one URL, one file: MSCOCO and VQAv2 share COCO's val2014.zip, so it holds images of both
VAL2014_ZIP = zip_bytes({f"val2014/COCO_val2014_{i:012d}.jpg": jpeg(i) for i in (1, 2, 120, 131, 300)})

TASK_LAYOUTS = {
    "flickr30k": (
        {"caption_datasets.zip": CAPTIONS_ZIP,
         "flickr30k-images.tar.gz": tar_bytes({f"flickr30k-images/{1000000 + i}.jpg": jpeg(i) for i in (0, 1, 205)})},
        ["dataset_flickr30k.json", "flickr30k-images/1000000.jpg", "flickr30k-images/1000205.jpg"],
    ),
    "mscoco": (
        {"caption_datasets.zip": CAPTIONS_ZIP,
         "train2014.zip": zip_bytes({f"train2014/COCO_train2014_{i:012d}.jpg": jpeg(i) for i in (0, 1)}),
         "val2014.zip": VAL2014_ZIP},
        ["dataset_coco.json", "train2014/COCO_train2014_000000000000.jpg", "val2014/COCO_val2014_000000000131.jpg"],
    ),
    "vqav2": (
        {"v2_Questions_Val_mscoco.zip": zip_bytes({"v2_OpenEnded_mscoco_val2014_questions.json": _VQA_Q}),
         "v2_Annotations_Val_mscoco.zip": zip_bytes({"v2_mscoco_val2014_annotations.json": _VQA_A}),
         "val2014.zip": VAL2014_ZIP},
        ["v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json",
         "val2014/COCO_val2014_000000000300.jpg"],
    ),
}


# --- small but complete text datasets: every image present, captions and questions naming objects -

OBJECT_CAPTIONS = ("a dog runs on the grass", "two men play with a ball", "a cat sleeps on a couch",
                   "a red bus on the street", "a woman holds an umbrella", "the sky over the hills")  # the last names no object


def captioned_flickr(n_train: int, n_val: int, n_test: int) -> tuple[bytes, bytes]:
    """(Karpathy JSON, image tar) of a Flickr30k-like set whose every image exists; captions
    cycle through :data:`OBJECT_CAPTIONS`, so some name no object and get no counterfactual."""
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    images, files = [], {}
    for i, split in enumerate(splits):
        entry = karpathy_image(i, split, f"{1000000 + i}.jpg")
        for j, sentence in enumerate(entry["sentences"]):
            sentence["raw"] = f"{OBJECT_CAPTIONS[(i + j) % len(OBJECT_CAPTIONS)]} {i}."
        images.append(entry)
        files[f"flickr30k-images/{1000000 + i}.jpg"] = jpeg(i)
    return karpathy_json("flickr30k", images), tar_bytes(files)


VQA_ITEMS = (  # question, answer type, answers cycled by image
    ("what color is the dog?", "other", ("brown", "black", "white")),
    ("is there a cat?", "yes/no", ("yes", "no")),
    ("how many people are there?", "number", ("2", "3", "1")),
)


def varied_vqa(n_images: int, subtype: str = "val2014") -> tuple[bytes, bytes, bytes]:
    """(questions JSON, annotations JSON, image zip) in VQAv2's layout, three answer types,
    answers that vary by image, and every image present."""
    questions, annotations = [], []
    for image_id in range(1, n_images + 1):
        for k, (text, kind, answers) in enumerate(VQA_ITEMS):
            qid, answer = image_id * 1000 + k, answers[image_id % len(answers)]
            questions.append({"image_id": image_id, "question": text, "question_id": qid})
            human = [answer] * 8 + [answers[(image_id + 1) % len(answers)]] * 2
            annotations.append({"question_type": " ".join(text.split()[:2]), "multiple_choice_answer": answer,
                                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(human)],
                                "image_id": image_id, "answer_type": kind, "question_id": qid})
    q = {"data_subtype": subtype, "questions": questions}
    a = {"data_subtype": subtype, "annotations": annotations}
    images = zip_bytes({f"{subtype}/COCO_{subtype}_{i:012d}.jpg": jpeg(i) for i in range(1, n_images + 1)})
    return json.dumps(q).encode(), json.dumps(a).encode(), images


# --- a dataset already on disk, in CoOp's $DATA layout (registry entries with local: true) --------


# --- the paper suite's tiny DTD (tests/pipeline/test_paper_*.py) ------------------------------


DTD_CLASSES = ["banded", "dotted", "striped", "zigzagged"]  # two base, two novel
DTD_PER_SPLIT = {"train": 3, "val": 1, "test": 2}


def striped_jpeg(rgb: tuple[int, int, int], stripe: int) -> bytes:
    image = Image.new("RGB", (24, 20), rgb)
    for x in range(0, 24, stripe):
        for y in range(20):
            image.putpixel((x, y), (255 - rgb[0], 255 - rgb[1], 255 - rgb[2]))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def coop_layout(classes: list[str], per_split: dict[str, int]):
    """Each image of CoOp's layout as ``(split part, label, class, index, <class>/<class>_NNNN.jpg)``:
    per class, its images numbered across the parts in order."""
    for label, name in enumerate(classes):
        index = 0
        for part, n in per_split.items():
            for _ in range(n):
                index += 1
                yield part, label, name, index, f"{name}/{name}_{index:04d}.jpg"


def dtd_archive() -> tuple[bytes, bytes]:
    """A DTD archive (``dtd/images/<class>/<class>_NNNN.jpg``) and its CoOp split file."""
    files, split = {}, {name: [] for name in DTD_PER_SPLIT}
    for part, label, name, index, rel in coop_layout(DTD_CLASSES, DTD_PER_SPLIT):
        files[f"dtd/images/{rel}"] = striped_jpeg((60 * label, 100 + 30 * index % 150, 200 - 40 * label), 2 + label)
        split[part].append([rel, label, name])
    return tar_bytes(files), json.dumps(split).encode()


def coop_folder(dataset, classes: list[str], per_split: dict[str, int], image=None,
                split_name: str = "split_zhou_MyDataset.json") -> tuple[str, int]:
    """``<dataset>/images/<class>/<class>_NNNN.jpg`` and ``<dataset>/split_zhou_<Name>.json``
    beside it, as CoOp's ``$DATA`` tree holds them; returns the split file's sha256 and the
    number of images it names.  ``image(label, index)`` gives each file's bytes (default: jpeg)."""
    image = image or (lambda label, index: jpeg(label * 7 + index))
    split: dict[str, list] = {name: [] for name in per_split}
    for part, label, name, index, rel in coop_layout(classes, per_split):
        path = dataset / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image(label, index))
        split[part].append([rel, label, name])
    data = json.dumps(split).encode()
    (dataset / split_name).write_bytes(data)
    return sha256(data), sum(len(v) for v in split.values())


def local_entry(images: int, split_sha256: str | None = None, **extra) -> dict:
    """A ``local: true`` registry entry for :func:`coop_folder`'s layout."""
    return {"name": "MyDataset", "local": True, "image_root": "images", "split_file": "split_zhou_MyDataset.json",
            "split_sha256": split_sha256, "images": images, **extra}
