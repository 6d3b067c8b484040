"""Optimisation pieces for penalised multinomial logistic regression.

As in skglm, the problem is split into a datafit (the smooth loss), a penalty
(with its proximal operator and optimality conditions) and solvers that only
talk to those two through small interfaces, so that another backend (torch on
a GPU, say) can be added by replacing one piece.
"""

from skh2t.linear_model._solver.datafits import MultinomialLogistic
from skh2t.linear_model._solver.fista import FistaResult, fista
from skh2t.linear_model._solver.lbfgs import fit_ridge_multinomial
from skh2t.linear_model._solver.penalties import GroupLasso
from skh2t.linear_model._solver.working_set import WorkingSetResult, solve_group_lasso

__all__ = [
    "FistaResult",
    "GroupLasso",
    "MultinomialLogistic",
    "WorkingSetResult",
    "fista",
    "fit_ridge_multinomial",
    "solve_group_lasso",
]
