"""General + domain data mixed at a ratio (the paper: about 0.25 general was best for driving).

`Mixture(general, domain, general_ratio, max_domain, seed)` is an indexable, endless sequence of
records: every block of 100 draws holds exactly round(ratio * 100) general records (carrying the
rounding over blocks), at shuffled positions; each source is walked through in per-epoch shuffled
orders. The domain side can be capped (`max_domain`: a fixed random subset). All of it is a pure
function of the seed and the index, so training resumes and shards over ranks without state.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ...edge.errors import InputError

BLOCK = 100
STREAM = 1 << 24


@lru_cache(maxsize=8)
def _order(n: int, seed: int, tag: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, tag, epoch]).permutation(n)


class Mixture:
    def __init__(self, general, domain, general_ratio: float = 0.25, max_domain: int | None = None,
                 seed: int = 0):
        if not 0.0 <= general_ratio <= 1.0:
            raise InputError(f"general_ratio must lie in [0, 1], got {general_ratio}")
        if general_ratio < 1 and not len(domain):
            raise InputError("no domain records to mix")
        if general_ratio > 0 and not len(general):
            raise InputError(f"general_ratio={general_ratio} but no general records were given "
                             "(pass general data, or general_ratio=0)")
        self.general, self.domain, self.ratio, self.seed = general, domain, general_ratio, seed
        n_dom = len(domain)
        if max_domain is not None and max_domain < n_dom:
            if max_domain < 1:
                raise InputError(f"max_domain must be positive, got {max_domain}")
            keep = np.random.default_rng([seed, 1]).choice(n_dom, max_domain, replace=False)
            self.domain_ids = np.sort(keep)
        else:
            self.domain_ids = None
        self.n_domain = n_dom if self.domain_ids is None else len(self.domain_ids)

    def _general_slots(self, block: int) -> np.ndarray:
        lo, hi = round(self.ratio * block * BLOCK), round(self.ratio * (block + 1) * BLOCK)
        rng = np.random.default_rng([self.seed, 2, block])
        return np.sort(rng.choice(BLOCK, hi - lo, replace=False)), lo

    def source(self, i: int) -> tuple[str, int]:
        """('general' | 'domain', how many of that source came before draw i)."""
        block, pos = divmod(i, BLOCK)
        slots, before = self._general_slots(block)
        k = int(np.searchsorted(slots, pos))
        if k < len(slots) and slots[k] == pos:
            return "general", before + k
        return "domain", block * BLOCK - before + pos - k

    @staticmethod
    def _walk(n: int, j: int, seed: int, tag: int) -> int:
        if n > STREAM:      # a generated stream: already in random order, too long to permute
            return j % n
        epoch, k = divmod(j, n)
        return int(_order(n, seed, tag, epoch)[k])

    def __len__(self) -> int:
        """One pass over the (capped) domain data, plus its general share."""
        if self.ratio >= 1:
            return len(self.general)
        return int(round(self.n_domain / (1 - self.ratio)))

    def __getitem__(self, i: int):
        kind, j = self.source(i)
        if kind == "general":
            return self.general[self._walk(len(self.general), j, self.seed, 3)]
        k = self._walk(self.n_domain, j, self.seed, 4)
        return self.domain[k if self.domain_ids is None else int(self.domain_ids[k])]
