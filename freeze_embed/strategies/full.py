"""Full fine-tuning: every parameter trains at the base LR (the paper's SGD and AdamW baselines)."""
from freeze_embed.strategies.base import Strategy


class FullFineTune(Strategy):
    """Train everything; the base class already does exactly this."""
