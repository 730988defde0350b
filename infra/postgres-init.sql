-- One database each for the Prefect server and the MLflow tracking server.
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
