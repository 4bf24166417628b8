"""`python -m stagecrew`: the same as the `stagecrew` command."""

from .cli.main import main

if __name__ == "__main__":  # worker processes re-import this module under another name
    main(prog_name="stagecrew")
