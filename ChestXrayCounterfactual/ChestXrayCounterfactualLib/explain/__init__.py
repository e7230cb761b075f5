"""The science: the explanation (:mod:`.explanation`), the pipeline that makes it (:mod:`.pipeline`), and what it
is made of: the input gate (:mod:`.gate`), model space (:mod:`.geometry`), saliency (:mod:`.saliency`) and the
counterfactual methods (:mod:`.counterfactual`); :mod:`.records` words a result without torch.

Imports nothing from :mod:`..outputs` or :mod:`..runs` (``Testing/Python/test_layers.py``), and nothing here at
package import, so ``explain.records`` stays torch-free.
"""
