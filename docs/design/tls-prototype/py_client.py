import ssl,urllib.request
c=ssl.create_default_context(); c.check_hostname=False; c.verify_mode=ssl.CERT_NONE
print(urllib.request.urlopen('https://10.99.0.1:8443/py-path', context=c).read())
