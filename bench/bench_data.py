"""Data throughput: pre-encoding speed and loader speed for audio_dir, pre_encoded and WebDataset data.

    python bench/bench_data.py [--config bench/configs/ae_oobleck32_vae.json] [--files 32] [--seconds 4]
                               [--batch-size 4] [--threads 2]

Writes a temporary dataset of ``--files`` stereo test tones of ``--seconds`` s at the model's sample rate
(as FLAC files and as WebDataset shards), pre-encodes it with the autoencoder of ``--config`` (random
weights, 1 s chunks, VAE sampling), then prints:

* pre-encoding throughput in seconds of audio encoded per second of wall time (the validation loop
  only, Lightning start-up excluded), with 0 and 2 DataLoader workers;
* loader throughput in samples per second for ``audio_dir``, ``pre_encoded`` and ``wds`` datasets,
  with 0 and 2 workers (two passes over the data, worker start-up included).
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_dataset(root: Path, files: int, seconds: float, sample_rate: int) -> Dict[str, Path]:
    """FLAC files under ``root/audio`` and the same audio as two WebDataset shards under ``root/shards``."""
    import webdataset as wds

    audio_dir, shard_dir = root / "audio", root / "shards"
    audio_dir.mkdir()
    shard_dir.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    sinks = [wds.TarWriter(str(shard_dir / f"shard-{i:03d}.tar")) for i in range(2)]
    for i in range(files):
        tone = 0.3 * np.sin(2 * np.pi * (110 + 20 * i) * t)[:, None] + 0.02 * rng.standard_normal((len(t), 2))
        sf.write(audio_dir / f"tone_{i:03d}.flac", tone.astype(np.float32), sample_rate)
        buf = io.BytesIO()
        sf.write(buf, tone.astype(np.float32), sample_rate, format="FLAC")
        sinks[i % 2].write({"__key__": f"tone_{i:03d}", "flac": buf.getvalue(), "json": {"text": f"tone {i}"}})
    for sink in sinks:
        sink.close()
    return {"audio": audio_dir, "shards": shard_dir}


def load_pre_encode_script() -> Any:
    spec = importlib.util.spec_from_file_location("pre_encode_script", ROOT / "pre_encode.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_pre_encoding(script: Any, root: Path, model_config: Path, ckpt: Path, dataset_config: Path,
                      sample_size: int, batch_size: int, workers: int) -> float:
    out = root / f"latents_{workers}"
    stats = script.main(["--model-config", str(model_config), "--ckpt-path", str(ckpt), "--dataset-config",
                         str(dataset_config), "--output-path", str(out), "--sample-size", str(sample_size),
                         "--batch-size", str(batch_size), "--num-workers", str(workers), "--no-progress"])
    return stats["audio_seconds"] / stats["seconds"]


def time_loader(dataset_config: Dict[str, Any], batch_size: int, sample_size: int, sample_rate: int,
                workers: int, passes: int = 2) -> float:
    from stable_audio_tools.data.dataset import create_dataloader_from_config

    loader = create_dataloader_from_config(dataset_config, batch_size=batch_size, sample_size=sample_size,
                                           sample_rate=sample_rate, audio_channels=2, num_workers=workers)
    samples = 0
    start = time.perf_counter()
    for _ in range(passes):
        for audio, _ in loader:
            samples += audio.shape[0]
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "bench" / "configs" / "ae_oobleck32_vae.json"))
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each test file")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    import pytorch_lightning  # noqa: F401  (sets its loggers' levels on import; quieten them afterwards)

    from stable_audio_tools.models.factory import create_model_from_config

    for name in ("pytorch_lightning", "lightning_fabric", "pre_encode", "stable_audio_tools"):
        logging.getLogger(name).setLevel(logging.ERROR)

    config = json.loads(Path(args.config).read_text())
    sample_rate = config["sample_rate"]
    ratio = config["model"]["downsampling_ratio"]
    sample_size = (sample_rate // ratio) * ratio  # about 1 s, a multiple of the downsampling ratio
    script = load_pre_encode_script()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = write_dataset(root, args.files, args.seconds, sample_rate)
        ckpt = root / "ae.ckpt"
        torch.manual_seed(0)
        torch.save({"state_dict": create_model_from_config(config).state_dict()}, ckpt)
        audio_config = {"dataset_type": "audio_dir", "datasets": [{"id": "tones", "path": str(paths["audio"])}],
                        "random_crop": True, "drop_last": False}
        (root / "audio.json").write_text(json.dumps(audio_config))
        for workers in (0, 2):
            rate = time_pre_encoding(script, root, Path(args.config), ckpt, root / "audio.json", sample_size,
                                     args.batch_size, workers)
            rows.append((f"pre-encoding, {workers} workers", rate, "s of audio / s"))
        latent_config = {"dataset_type": "pre_encoded", "datasets": [{"path": str(root / "latents_0")}],
                         "latent_crop_length": sample_size // ratio // 2, "random_crop": True, "drop_last": False}
        wds_config = {"dataset_type": "wds", "datasets": [{"id": "tones", "path": str(paths["shards"])}],
                      "resampled_shards": False}
        for name, cfg in (("audio_dir", audio_config), ("pre_encoded", latent_config), ("wds", wds_config)):
            for workers in (0, 2):
                rate = time_loader(cfg, args.batch_size, sample_size, sample_rate, workers)
                rows.append((f"{name} loader, {workers} workers", rate, "samples / s"))

    print(f"\ndata benchmark: {Path(args.config).name}, {args.files} files x {args.seconds:g} s stereo at "
          f"{sample_rate} Hz, chunks of {sample_size} samples, batch {args.batch_size}, torch {torch.__version__}, "
          f"{args.threads} threads")
    print(f"| {'what':<30} | {'throughput':>10} | unit           |")
    print(f"|{'-' * 32}|{'-' * 12}|{'-' * 16}|")
    for what, value, unit in rows:
        print(f"| {what:<30} | {value:>10.1f} | {unit:<14} |")


if __name__ == "__main__":
    main()
