"""The sandbox: loopback stand-ins for the systems rotator talks to, and simulated controllers."""
