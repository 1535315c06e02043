"""`llmctl eval`: language-model scoring on token shards, multiple-choice and generative tasks."""
