"""`dnasweep analyze`'s numpy core: path statistics, power-law fit, mutual information, module usage
and compute allocation of a routed model, and the self-contained report built from them.

No torch, ray, optuna or mlflow here: the caller runs the model, fills a `Routed`, and logs what
`build_report` writes. matplotlib and powerlaw are imported lazily by the functions that use them.
"""

from dnasweep.analyze.fits import PowerLawFit, fit_rank_frequency
from dnasweep.analyze.info import MITest, entropy_bits, mi_test, mutual_information_bits, normalized_mi
from dnasweep.analyze.paths import path_ids, path_label, rank_frequency
from dnasweep.analyze.report import build_report
from dnasweep.analyze.routed import Routed

__all__ = ["MITest", "PowerLawFit", "Routed", "build_report", "entropy_bits", "fit_rank_frequency", "mi_test",
           "mutual_information_bits", "normalized_mi", "path_ids", "path_label", "rank_frequency"]
