"""idspam: input-dependent soft prompts (ID-SPAM) and PEFT baselines on frozen language models."""

__version__ = "0.1.0"
