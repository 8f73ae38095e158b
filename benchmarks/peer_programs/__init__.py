"""The programs benchmarks.peers runs, each in its own process: the library, the plain loops, Keras, Lightning."""
