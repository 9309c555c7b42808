"""Where a removed channel's weights land: the input columns its consumers' filters lose.

With weight features a group's features are its producers' filters; when a channel of
another group goes, the filters that read it lose those input columns, and the reading
group's Gram matrix gets a downdate (:class:`~mrp_gpu.pruner.state.grams.Grams`).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["Propagation"]


class Propagation:
    """The dropped weight columns of every group that reads a pruned group."""

    def __init__(self, model, groups, device):
        self.model, self.groups, self.device = model, groups, device
        # producer module -> (group index, its out slice): where a dropped input column lands
        self.producer_of = {s.module: (gi, s) for gi, g in enumerate(groups) for s in g.producers}
        self.consumers: dict[str, tuple] = {}  # see _consumer

    def lost_columns(self, g: int, channels) -> list[tuple[int, torch.Tensor]]:
        """``(h, cols)`` for every group ``h`` whose filters read the ``channels`` of ``g``:
        the weight columns they lose, one row per channel of ``h``."""
        dropped = np.zeros(self.groups[g].size, dtype=bool)
        dropped[channels] = True
        out = []
        for s in self.groups[g].consumers:
            if s.module not in self.producer_of:
                continue  # e.g. the classifier: its outputs are nobody's feature
            h, out_slice = self.producer_of[s.module]
            cols = self._dropped_columns(s, dropped, out_slice)
            if cols is not None:
                out.append((h, cols))
        return out

    def _dropped_columns(self, s, dropped: np.ndarray, out_slice) -> torch.Tensor | None:
        """The weights of ``s.module`` that read the ``dropped`` channels (a mask over its input
        group), one row per channel of its own group."""
        pos = s.idxs[dropped[s.channel]]
        if len(pos) == 0:
            return None
        w, groups, order = self._consumer(s.module, out_slice)
        if groups == 1:  # ``w``: the rows already in group order, on the planner's device
            return w.index_select(1, torch.as_tensor(pos, device=w.device)).flatten(1)
        per_in, per_out = w.shape[1], w.shape[0] // groups  # input i feeds only the filters of its own block
        width = int(np.prod(w.shape[2:]))
        cols = torch.zeros(w.shape[0], len(pos) * width, dtype=w.dtype, device=w.device)
        for k, i in enumerate(pos.tolist()):
            b, j = divmod(i, per_in)
            rows = slice(b * per_out, (b + 1) * per_out)
            cols[rows, k * width:(k + 1) * width] = w[rows, j].flatten(1)
        return cols[order].float().to(self.device)

    def _consumer(self, name: str, out_slice) -> tuple[torch.Tensor, int, torch.Tensor]:
        """A consumer's weight (inputs on dim 1), its number of blocks, and its filters in the
        order of its own group's channels, looked up once per plan. A dense consumer's weight
        is kept with its rows already in that order (float32, on the planner's device)."""
        if name not in self.consumers:
            m = self.model.get_submodule(name)
            w = m.weight.detach()
            if isinstance(m, torch.nn.modules.conv._ConvTransposeNd):
                w = w.transpose(0, 1)
            order = torch.as_tensor(out_slice.idxs[np.argsort(out_slice.channel, kind="stable")], device=w.device)
            groups = getattr(m, "groups", 1)
            if groups == 1:
                w = w.index_select(0, order).float().to(self.device)
            self.consumers[name] = (w, groups, order)
        return self.consumers[name]
