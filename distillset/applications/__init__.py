"""What distilled sets are for: class-incremental learning with a condensed memory (``continual``), a
proxy for architecture search (``nas``) and a membership-inference audit (``privacy``)."""
from .continual import ClassIncremental
from .nas import ArchitectureSearch, rank_correlations, search_space
from .privacy import MembershipAudit, lira_scores, tpr_at_fpr

__all__ = ["ClassIncremental", "ArchitectureSearch", "rank_correlations", "search_space", "MembershipAudit",
           "lira_scores", "tpr_at_fpr"]
