"""pipelines: the stages as plain functions (sources, evaluate, synth, ...) and the CLI over them."""
