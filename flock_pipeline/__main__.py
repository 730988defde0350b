from flock_pipeline.cli import main

main()
