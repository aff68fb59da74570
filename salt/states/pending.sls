# An example state for `callbacks.execute_raw <minion> "state.sls pending" callback_url=...`:
# the COMMAND_EXECUTED webhook then carries every state's result in response.data.return.
callbacks-example-file:
  file.managed:
    - name: /tmp/salt-callbacks-example
    - contents: "managed by salt-callbacks' example state\n"

callbacks-example-check:
  cmd.run:
    - name: test -f /tmp/salt-callbacks-example
    - require:
      - file: callbacks-example-file
