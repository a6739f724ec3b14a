"""The PyTorch peer of the throughput benchmark: torchvision's GoogLeNet.

It runs in its own virtual environment with torch and torchvision (never the
project's), started by benchmarks/throughput.py, for example::

    benchmarks/work/torchvenv/bin/python benchmarks/peer_torch.py \\
        --files list.txt --json out.json

The network has random weights (`googlenet(weights=None, aux_logits=False,
init_weights=True)`); a DataLoader with `--workers` processes decodes with
Pillow and applies the usual Resize(256), CenterCrop(224), ToTensor and
Normalize. The script writes its timings as JSON: the import and set-up times,
the model-only rate on one pre-decoded batch when asked, and the time to
classify every listed file.
"""

import argparse
import json
import time

START = time.perf_counter()

import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms  # noqa: E402

IMPORTED = time.perf_counter()

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


class Files(torch.utils.data.Dataset):
    """The listed image files, decoded like torchvision's ImageFolder does."""

    def __init__(self, paths, transform):
        self.paths = paths
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        with open(self.paths[index], "rb") as handle:
            image = Image.open(handle).convert("RGB")
        return self.transform(image)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", required=True, help="text file, one path a line")
    parser.add_argument("--json", required=True, help="where to write the timings")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--model-only-batches",
        type=int,
        default=0,
        help="also time this many forward passes on one pre-decoded batch",
    )
    return parser.parse_args()


def main():
    """Times the peer and writes the figures as JSON."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    with open(args.files, encoding="utf-8") as listing:
        paths = [line.rstrip("\n") for line in listing if line.strip()]

    model = torchvision.models.googlenet(
        weights=None, aux_logits=False, init_weights=True
    ).eval()
    transform = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    dataset = Files(paths, transform)
    ready = time.perf_counter()
    figures = {
        "import_s": IMPORTED - START,
        "setup_s": ready - IMPORTED,
        "images": len(paths),
        "threads": torch.get_num_threads(),
        "workers": args.workers,
    }

    with torch.inference_mode():
        if args.model_only_batches:
            # Excluded from the run's time by the caller: model_only_s.
            warm, cpu_warm = time.perf_counter(), time.process_time()
            batch = torch.stack([dataset[i % len(dataset)] for i in range(args.batch)])
            for _ in range(2):
                model(batch)
            began, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.model_only_batches):
                torch.softmax(model(batch), dim=1).numpy()
            images = args.model_only_batches * args.batch
            figures["model_only_images_per_s"] = images / (time.perf_counter() - began)
            figures["model_only_cpu_ms_per_image"] = (
                1000 * (time.process_time() - cpu) / images
            )
            figures["model_only_s"] = time.perf_counter() - warm
            figures["model_only_cpu_s"] = time.process_time() - cpu_warm

        loader = torch.utils.data.DataLoader(
            dataset, batch_size=args.batch, num_workers=args.workers, shuffle=False
        )
        began = time.perf_counter()
        rows = []
        for batch in loader:
            rows.append(torch.softmax(model(batch), dim=1).numpy())
        figures["classify_s"] = time.perf_counter() - began
        figures["classified"] = sum(len(row) for row in rows)

    figures["total_s"] = time.perf_counter() - START
    with open(args.json, "w", encoding="utf-8") as out:
        json.dump(figures, out, indent=1)


if __name__ == "__main__":
    main()
