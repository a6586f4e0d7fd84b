"""`dlrun explain` and `dlrun attack`: looking inside a trained image network and fooling it.

    explain  heat maps (Grad-CAM, saliency, occlusion) with a deletion test of their
             faithfulness, first-layer filters, a layer's activation maps, the test images that
             excite chosen units most, a t-SNE of the penultimate-layer codes
    attack   accuracy under FGSM and PGD for each budget eps, adversarial examples, the
             accuracy-vs-eps curve; fooling images classified with >= 99 % confidence

Both read a logged run (like `dlrun eval run_id=`), ask its task for a `Lens` on the served
model (lens.py: the only task-specific part) and log figures and metrics to the same run under
explain/ and attack/ without touching its test metrics or its status. Method names live in two
registries; importing this package does not import TensorFlow.
"""

from __future__ import annotations

from dlrun.registry import Registry

EXPLAINERS = Registry("explain method")
ATTACKS = Registry("attack method")

# the modules that fill the registries (they import TensorFlow inside their functions only)
from dlrun.explain import attack, heatmaps, inside  # noqa: E402,F401
