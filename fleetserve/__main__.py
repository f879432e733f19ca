from fleetserve.cli import main

main()
