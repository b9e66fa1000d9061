"""Roost data: the shared bimodal pipeline with every structure hidden (composition only)."""

from cosynth.models.bimodal_data import BimodalDataset, BimodalRows, apply_mode, featurize


def composition_rows(frame, **kwargs) -> tuple[BimodalRows, object]:
    """(rows, problems) of a frame with ``id``, ``formula``, ``target``; structures are ignored."""
    frame = frame.assign(cif=None)
    rows, problems = featurize(frame, **kwargs)
    return apply_mode(rows, "composition", train=False), problems


__all__ = ["BimodalDataset", "composition_rows"]
