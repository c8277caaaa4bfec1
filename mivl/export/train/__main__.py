"""`python -m mivl.export.train ...` (and `torchrun ... -m mivl.export.train ...`) = `mivl-export train ...`."""
import sys

from ..cli import main

sys.exit(main(["train", *sys.argv[1:]]))
