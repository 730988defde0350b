from flock_pipeline.faces.cli import main

main()
