"""What a report says about its runs in words: the dense reference's label and the protocol
(model, data, recipe, pruning split; a transfer sweep's backbone, probe or fine-tuning)."""

from __future__ import annotations

from ..cell_check import TRANSFER


def is_transfer(result: dict) -> bool:
    """Whether the report is of a ``sweep --transfer`` folder."""
    return result.get("kind") == TRANSFER


def dense_label(result: dict) -> str:
    """What the dense reference is: unpruned, or the pre-trained backbone probed / fine-tuned."""
    if not is_transfer(result):
        return "Dense (unpruned)"
    proto = result["record"].get("protocol") or {}
    if proto.get("mode") == "finetune":
        return "Dense (pre-trained backbone fine-tuned)"
    return "Dense (pre-trained backbone, ridge probe)"


def _transfer_protocol_text(result: dict, proto: dict, recipe: dict, names: set) -> str:
    """The protocol of a transfer sweep in one sentence-like line."""
    parts = [f"backbone {proto.get('backbone')} (weights: {proto.get('weights') or 'default'})",
             f"dataset {', '.join(sorted(names)) or proto.get('dataset')}",
             (f"images resized to {proto['image_size']} px" if proto.get("image_size")
              else "images at their own size"),
             f"probe fitted on {proto.get('train_per_class') or 'all'} train images/class, "
             f"tested on {proto.get('test_per_class') or 'all'} test images/class",
             f"pruning split {proto.get('per_class')}/class with the "
             + ("dense probe" if proto.get("head") == "probe" else "random head")
             + f" as classifier, {proto.get('scope')} scope"]
    if proto.get("rounds"):
        parts.append(f"{proto['rounds']} rounds")
    elif proto.get("round_factor"):
        parts.append(f"multi-round methods keep {proto['round_factor']} of the density per "
                     f"round (round(ln(1 - s) / ln {proto['round_factor']}) rounds at sparsity s)")
    else:
        parts.append("each method's default rounds")
    if proto.get("mode") == "finetune":
        parts.append(f"fine-tuned with the mask fixed: recipe {proto.get('recipe')}, "
                     f"{proto.get('epochs') or recipe.get('epochs')} epochs, lr "
                     f"{recipe.get('lr')}, batch {recipe.get('batch_size')}")
    else:
        parts.append("ridge probe refitted on the pruned features, no training")
    return "; ".join(parts)


def protocol_text(result: dict) -> str:
    """The protocol in one sentence-like line (``unknown`` without a record)."""
    record = result["record"]
    proto, recipe = record.get("protocol") or {}, record.get("recipe") or {}
    if not proto:
        return "protocol: unknown (no sweep.json)"
    names = {c.get("dataset_name") for c in result["cells"] if c.get("dataset_name")}
    if is_transfer(result):
        return _transfer_protocol_text(result, proto, recipe, names)
    parts = [f"model {proto.get('model')}",
             f"dataset {', '.join(sorted(names)) or proto.get('dataset')}",
             f"recipe {proto.get('recipe')}: {recipe.get('epochs')} epochs, "
             f"{recipe.get('schedule')} schedule, lr {recipe.get('lr')}, "
             f"batch {recipe.get('batch_size')}"]
    if proto.get("train_per_class"):
        parts.append(f"{proto['train_per_class']} train images/class")
    if proto.get("test_per_class"):
        parts.append(f"{proto['test_per_class']} test images/class")
    parts.append(f"pruning split {proto.get('per_class')}/class, {proto.get('scope')} scope")
    return "; ".join(parts)

