"""The statements that set a first migration's keys aside and restore them (engine/keys.py), whole."""

from migration_assets.engine import keys


def test_set_aside_and_restore_statements():
    pk = keys.Key("public", "patients", "patients_pkey", "p", "PRIMARY KEY (id)",
                  "CREATE UNIQUE INDEX patients_pkey ON public.patients USING btree (id)")
    fk = keys.Key("public", "addresses", "addresses_patient_id_fkey", "f",
                  "FOREIGN KEY (patient_id) REFERENCES public.patients(id)")
    ix = keys.Key("public", "addresses", "addresses_patient_id_idx", "i",
                  "CREATE INDEX addresses_patient_id_idx ON public.addresses USING btree (patient_id)")
    uq = keys.Key("public", "profiles", "profiles_email_key", "u", "UNIQUE (email) DEFERRABLE",
                  "CREATE UNIQUE INDEX profiles_email_key ON public.profiles USING btree (email)")
    text = [s.as_string(None) for s in keys.drop_sql([pk, ix, fk, uq])]
    assert text == ['ALTER TABLE "public"."addresses" DROP CONSTRAINT "addresses_patient_id_fkey"',
                    'DROP INDEX "public"."addresses_patient_id_idx"',
                    'ALTER TABLE "public"."profiles" DROP CONSTRAINT "profiles_email_key"',
                    'ALTER TABLE "public"."patients" DROP CONSTRAINT "patients_pkey"']
    assert [s.as_string(None) for s in keys.build_indexes_sql([fk, ix, pk])] == [
        "CREATE UNIQUE INDEX patients_pkey ON public.patients USING btree (id)",
        "CREATE INDEX addresses_patient_id_idx ON public.addresses USING btree (patient_id)"]
    built = {("public", "patients_pkey"), ("public", "addresses_patient_id_idx")}
    assert [(k.name, s.as_string(None)) for k, s in keys.restore_sql([fk, ix, uq, pk], built)] == [
        ("patients_pkey", 'ALTER TABLE "public"."patients" ADD CONSTRAINT "patients_pkey" PRIMARY KEY '
                          'USING INDEX "patients_pkey"'),
        ("profiles_email_key", 'ALTER TABLE "public"."profiles" ADD CONSTRAINT "profiles_email_key" UNIQUE '
                               '(email) DEFERRABLE'),
        ("addresses_patient_id_fkey", 'ALTER TABLE "public"."addresses" ADD CONSTRAINT '
                                      '"addresses_patient_id_fkey" FOREIGN KEY (patient_id) REFERENCES '
                                      'public.patients(id)')]
    assert keys.restore_sql([uq], {("public", "profiles_email_key")})[0][1].as_string(None) == (
        'ALTER TABLE "public"."profiles" ADD CONSTRAINT "profiles_email_key" UNIQUE USING INDEX '
        '"profiles_email_key" DEFERRABLE')
