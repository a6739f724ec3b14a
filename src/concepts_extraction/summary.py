"""Print the top concept of each image of a result file.

Usage: `python -m concepts_extraction.summary FILE`.
"""

import os
import sys

from . import jsonio
from .aggregate import summary_table


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(
            "usage: python -m concepts_extraction.summary RESULT.json", file=sys.stderr
        )
        return 2
    document = jsonio.read_json(argv[0])
    summary = document["summary"]
    print(
        f"{document['model']}: classified {summary['classified']}, "
        f"rejected {summary['rejected']}, skipped {summary['skipped']}"
    )
    print(summary_table(document, rows=20).to_string(index=False))
    for path, reason in sorted(document["rejected"].items()):
        print(f"rejected {path}: {reason}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        # The reader stopped early (`| head`). Python would report the failed
        # flush of stdout at exit, so stdout is pointed at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
