"""`python -m ebgen ...`: the same command line as `ebgen ...`."""
from ebgen.cli.main import main

if __name__ == "__main__":
    main()
