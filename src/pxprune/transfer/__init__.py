"""Transfer: prune a pre-trained backbone with downstream data, then probe or fine-tune it.

The paper's second claim (Fig. 3; docs/px.md §5) is that PX applied to a *pre-trained* model
keeps a subnetwork that stays usable on a downstream task at high sparsity. One module a step:

- :mod:`~pxprune.transfer.load`: a built-in backbone by name or the user's nn.Module, weights
  loaded strictly, a fresh classifier for the new classes (:func:`load.load_backbone`);
- :mod:`~pxprune.transfer.head`: which nn.Linear is the classifier (named, or found: the last
  one whose output is the logits), and replacing it;
- :mod:`~pxprune.transfer.features`: prepared inputs and the classifier's input features;
- :mod:`~pxprune.transfer.probe`: the closed-form ridge probe fitted on training data only;
- :mod:`~pxprune.transfer.prune`: pruning with the task's pruning split, a probe as the head;
- :mod:`~pxprune.transfer.finetune`: BatchNorm recalibration and fine-tuning with the mask fixed.
"""
