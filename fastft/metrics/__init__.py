"""Task metrics computed on generated text: Korean ROUGE, QA exact match / F1, SWC classification."""
from .classification import classification_metrics, confusion_markdown, parse_label
from .qa import qa_metrics
from .rouge import rouge

__all__ = ["classification_metrics", "confusion_markdown", "parse_label", "qa_metrics", "rouge"]
