"""Changes a SCRAM-SHA-512 user's password on a broker, authenticated as that user with
the old password: the old one no longer authenticates afterwards. Used by the tests to
revoke the bridge's Kafka password during a rotation (confluent-kafka's Admin API:
AlterUserScramCredentials, which tansu serves).

    python3 scram_password.py BOOTSTRAP USER OLD NEW
"""

import sys

from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

bootstrap, user, old, new = sys.argv[1:5]
admin = AdminClient(
    {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": old,
    }
)
info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
futures = admin.alter_user_scram_credentials(
    [UserScramCredentialUpsertion(user, info, new.encode())]
)
for future in futures.values():
    future.result(timeout=20)
print("changed")
