from fuzzkv.cli import main

main()
