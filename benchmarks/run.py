"""Run a benchmark suite side by side with torch: the same as `portaconv bench`.

    python benchmarks/run.py --suite cpu --out benchmarks/results
"""

import argparse
import sys

from portaconv.app.bench import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
