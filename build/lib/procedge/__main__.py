from procedge.cli import main

main()
