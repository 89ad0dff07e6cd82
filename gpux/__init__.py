"""The `gpux` command (`cli`: one subcommand per service) and `gpux dev` (`dev/`: the whole
venue in one process on embedded defaults)."""
