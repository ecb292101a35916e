from harness.cli import main

if __name__ == "__main__":     # not again in a worker process that multiprocessing spawns from this module
    main()
