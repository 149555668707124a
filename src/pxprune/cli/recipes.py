"""``pxprune recipes``: what each training recipe does (epochs, lr, schedule, optimiser, batch)."""

from __future__ import annotations

import argparse

from ..training.recipes import RECIPES, Recipe


def recipe_row(name: str, recipe: Recipe) -> list[str]:
    """One recipe as table cells: the hyper-parameters a user chooses between."""
    schedule = recipe.schedule + (f" {list(recipe.milestones)} x{recipe.gamma:g}"
                                  if recipe.schedule == "multistep" else "")
    optimiser = recipe.optimizer + (" nesterov" if recipe.nesterov else "")
    return [name, str(recipe.epochs), f"{recipe.lr:g}", schedule, optimiser,
            f"{recipe.momentum:g}", f"{recipe.weight_decay:g}", str(recipe.batch_size)]


def recipes_table() -> str:
    """Every recipe as an aligned text table, then each one's note."""
    header = ["recipe", "epochs", "lr", "schedule", "optimizer", "momentum", "weight_decay",
              "batch"]
    rows = [header] + [recipe_row(n, r) for n, r in RECIPES.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += ["", *(f"{n}: {r.notes}" for n, r in RECIPES.items() if r.notes)]
    return "\n".join(lines)


def cmd_recipes(_args: argparse.Namespace) -> int:
    print(recipes_table())
    print("\n--epochs, --lr, --batch-size, --schedule, --weight-decay and --momentum override "
          "a recipe's value; the lr is the schedule's peak.")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pxprune recipes``."""
    p = sub.add_parser("recipes", help="list the training recipes and what each does")
    p.set_defaults(func=cmd_recipes)
