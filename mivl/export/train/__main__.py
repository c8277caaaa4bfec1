"""`python -m mivl.export.train ...` (and `torchrun ... -m mivl.export.train ...`) = `mivl-export train ...`;
`... -m mivl.export.train distill ...` = `mivl-export distill ...`."""
import sys

from ..cli import main

args = sys.argv[1:]
sys.exit(main(args if args[:1] == ["distill"] else ["train", *args]))
