"""Generation with the training template, and task metrics on generated text."""
