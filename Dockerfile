# Image for the docker-compose stack: Airflow 3 with the project's pinned dependencies.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt /requirements.txt
RUN pip install --no-cache-dir -r /requirements.txt "psycopg2-binary==2.9.11"
