from fraktal.cli import main

main()
