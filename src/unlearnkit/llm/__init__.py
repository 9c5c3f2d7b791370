"""Language-model building blocks of the LLM track: tokenisation with answer-only labels, batched log-probabilities,
greedy generation, and the training loop used for θ_o / θ_r and by the LLM unlearning methods."""
